"""How a saved model runs, in names every floor shares (standard library only): the command line's flags, the
torch and onnxruntime predictors, the exporter and the model card read them here.

    BACKENDS     torch (the saved weights) or onnxruntime (an exported ONNX file; no torch needed)
    ONNX_FILES   the Hub's layout for ONNX files: export.py writes them, the onnxruntime backend reads them
    PRECISIONS   the torch backend's: fp32, or autocast in bf16/fp16 (inference.AUTOCAST_DTYPES maps them to dtypes)
"""

from pathlib import Path

BACKENDS = ("torch", "onnxruntime")
ONNX_FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx"}
PRECISIONS = ("fp32", "bf16", "fp16")


def onnx_files(folder: Path) -> list[tuple[str, int]]:
    """The ONNX files a model folder holds, as (path in the folder, bytes), fp32 first."""
    return [(name, (folder / name).stat().st_size) for name in ONNX_FILES.values() if (folder / name).is_file()]


def training_precision(bf16: bool | None, fp16: bool | None) -> str:
    """The precision a run trained and evaluated in, from its `training.bf16` / `training.fp16`: bf16/fp16 autocast
    (the Trainer evaluates under the same autocast), else fp32. Its reported numbers are reproduced only in it."""
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"
