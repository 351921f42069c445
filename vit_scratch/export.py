"""A saved model -> ONNX files in the Hub's layout, each checked against the PyTorch model before it is kept.

- `onnx/model.onnx`: fp32, `torch.onnx.export(dynamo=True)`, input `pixel_values` (batch dynamic from 1), output
  `logits`, opset 18, one file (no external data). Exported with a batch of 2: a batch of 1 can fix the axis.
- `onnx/model_quantized.onnx`: onnxruntime's dynamic int8 quantization of the MatMul/Gemm weights. The patch
  convolution stays fp32: ConvInteger with signed int8 weights does not load in onnxruntime (its issue 12362).
- `pt2/model.pt2` (only when asked): `torch.export`'s ExportedProgram, for PyTorch-native serving.

Each is written into a hidden folder inside the output folder, checked on real images (fp32 and pt2: max |logit
difference| to torch <= FP32_TOLERANCE; int8: top-1 agreement with torch, reported) and only then moved into place:
a file that fails its check is never left behind. The folder's model card gets its ONNX section (reporting.card),
and `--push-to-hub` uploads the files and that card.
"""

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vit_scratch import inference
from vit_scratch.atomic import atomic_path
from vit_scratch.backends import ONNX_FILES
from vit_scratch.errors import ConfigError, DataError

logger = logging.getLogger("vit_scratch")

FILES = {**ONNX_FILES, "pt2": "pt2/model.pt2"}  # pt2: torch.export's ExportedProgram, for PyTorch-native serving
DEFAULT_FORMATS = tuple(ONNX_FILES)  # fp32, int8
OPSET = 18
FP32_TOLERANCE = 1e-4  # max |logit difference| of the fp32 file to torch, on the check images
CHECK_IMAGES = 256  # the run's first test images the files are checked on
MODEL_FILES = ("config.json", "preprocessor_config.json")  # what the torch-free predictor reads beside onnx/


class ExportCheckFailed(DataError):
    """An exported file does not reproduce the PyTorch model: it was not kept."""


class LogitsOnly(torch.nn.Module):
    """The classifier with one tensor in (`pixel_values`) and one out (`logits`): the ONNX graph's signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_fp32(model, path: Path) -> None:
    """The model (eval mode) as an fp32 ONNX file with a dynamic batch axis."""
    for name in ("onnx_ir", "onnxscript"):  # their INFO lines for every graph pass
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" x4: not needed here
    side, channels = model.config.image_size, model.config.num_channels
    example = torch.randn(2, channels, side, side)  # batch >= 2: a batch of 1 can specialise the axis
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(LogitsOnly(model).eval(), (example,), str(path), dynamo=True, opset_version=OPSET,
                      input_names=["pixel_values"], output_names=["logits"], external_data=False,
                      dynamic_shapes={"pixel_values": {0: batch}}, verbose=False)


def export_pt2(model, path: Path) -> None:
    """The model as a `torch.export` ExportedProgram (`torch.export.save`; load with `torch.export.load(path)
    .module()`), batch dynamic from 1 as in the ONNX file."""
    side, channels = model.config.image_size, model.config.num_channels
    program = torch.export.export(LogitsOnly(model).eval(), (torch.randn(2, channels, side, side),),
                                  dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, str(path))


def pt2_logits(path: Path, pixel_values: np.ndarray, batch_size: int = 64) -> np.ndarray:
    module = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(x)).numpy() for x in inference.batches(pixel_values,
                                                                                              batch_size)])


def quantize_int8(fp32_path: Path, path: Path, keep_fp32: Sequence[str] = ()) -> None:
    """Dynamic int8 quantization of the MatMul/Gemm weights (activations quantized per batch at run time); the
    nodes named in `keep_fp32` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs each tensor on the root logger, and suggests a pre-processing
    try:  # pass that does not change dynamic quantization's result
        quantize_dynamic(str(fp32_path), str(path), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8, nodes_to_exclude=list(keep_fp32))
    finally:
        root.setLevel(level)


def check_inputs(source: str, model, processor, images: Sequence[str] | None) -> np.ndarray:
    """float32 pixel values of real images to check the files on: the given image files (prepared by the model's
    image processor), else the first CHECK_IMAGES test images of the run the folder holds (experiment.json)."""
    if images:
        paths = inference.find_images(images)
        inference.check_images(paths)
        opened = [inference.open_image(p, model.config.num_channels) for p in paths]
        return processor(images=opened, return_tensors="np")["pixel_values"].astype(np.float32)
    from vit_scratch.config.saved import dataset_arguments, saved_experiment
    from vit_scratch.data import load_split

    experiment = saved_experiment(source)
    if "dataset" not in experiment:
        raise ConfigError(f"model {source!r}: no experiment.json to take check images from; pass --images "
                          "FILE_OR_FOLDER (real images the files are checked on)")
    limit = min(CHECK_IMAGES, experiment["dataset"].get("max_test_samples") or CHECK_IMAGES)
    data_args = dataset_arguments(experiment, [("dataset.max_test_samples", str(limit))])
    if data_args.test_split is None:
        raise ConfigError(f"model {source!r}: its run has no test split; pass --images FILE_OR_FOLDER")
    split, _ = load_split(data_args, "test", model.config.image_size, model.config.num_channels)
    return inference.normalize(split.images, processor).numpy()


def torch_logits(model, pixel_values: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([inference.forward(model, torch.from_numpy(x))[0].numpy()
                           for x in inference.batches(pixel_values, batch_size)])


def onnx_logits(path: Path, pixel_values: np.ndarray, batch_size: int = 64) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"pixel_values": x})[0] for x in inference.batches(pixel_values,
                                                                                                  batch_size)])


def export(source: str, output: Path, formats: Sequence[str] = DEFAULT_FORMATS, images: Sequence[str] | None = None,
           keep_fp32: Sequence[str] = ()) -> dict:
    """Write the `formats` of the saved model `source` into `output` (FILES: onnx/..., pt2/; with `output`'s
    config files), each checked first. Returns {format: {"file", "bytes", check results}}."""
    model, processor = inference.load_model(source, device=torch.device("cpu"))
    copies = model_files_to_copy(source, output)
    pixel_values = check_inputs(source, model, processor, images)
    reference = torch_logits(model, pixel_values)
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output, prefix=".onnx-export-"))
    staged = {name: staging / Path(FILES[name]).name for name in FILES}
    report = {}
    try:
        if {"fp32", "int8"} & set(formats):  # the int8 file is quantized from the fp32 one
            logger.info("exporting %s to ONNX (opset %d)", source, OPSET)
            export_fp32(model, staged["fp32"])
            report["fp32"] = {"max_abs_logit_diff": _check_fp32("fp32", onnx_logits(staged["fp32"], pixel_values),
                                                                reference)}
        if "int8" in formats:
            quantize_int8(staged["fp32"], staged["int8"], keep_fp32)
            logits = onnx_logits(staged["int8"], pixel_values)
            agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            diff = float(np.abs(logits - reference).max())
            logger.info("int8: top-1 agreement with torch on %d images: %.2f%%, max |logit difference| %.3g",
                        len(pixel_values), 100 * agreement, diff)
            report["int8"] = {"top1_agreement": agreement, "max_abs_logit_diff": diff}
        if "pt2" in formats:
            export_pt2(model, staged["pt2"])
            report["pt2"] = {"max_abs_logit_diff": _check_fp32("pt2", pt2_logits(staged["pt2"], pixel_values),
                                                               reference)}
        kept = {name: report[name] for name in formats}
        for original, copy in copies:
            with atomic_path(copy) as tmp:
                shutil.copyfile(original, tmp)
        for name, info in kept.items():
            info.update(file=FILES[name], bytes=staged[name].stat().st_size, check_images=len(pixel_values))
            (output / FILES[name]).parent.mkdir(exist_ok=True)
            staged[name].replace(output / FILES[name])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return kept


def _check_fp32(name: str, logits: np.ndarray, reference: np.ndarray) -> float:
    """The max |logit difference| of an fp32 file to torch; ExportCheckFailed above FP32_TOLERANCE."""
    diff = float(np.abs(logits - reference).max())
    logger.info("%s: max |logit difference| to torch on %d images: %.3g", name, len(reference), diff)
    if not diff <= FP32_TOLERANCE:
        raise ExportCheckFailed(f"{FILES[name]}: its logits differ from torch's by up to {diff:.3g} "
                                f"(> {FP32_TOLERANCE}) on {len(reference)} images; nothing was written")
    return diff


def model_files_to_copy(source: str, output: Path) -> list[tuple[Path, Path]]:
    """(original, copy) of config.json and preprocessor_config.json when `output` is not the model's folder: the
    torch-free predictor reads them beside onnx/. ConfigError, before any work, when `output` holds another
    model's."""
    from transformers.utils import cached_file

    pairs = []
    for name in MODEL_FILES:
        original, target = Path(cached_file(source, name)), output / name
        if target.exists() and target.resolve() == original.resolve():
            continue
        if target.exists() and target.read_bytes() != original.read_bytes():
            raise ConfigError(f"--output {output}: holds another model's {name}; pick an empty folder")
        pairs.append((original, target))
    return pairs


def push(output: Path, repo_id: str, files: Sequence[str]) -> None:
    """Upload `files` (paths in `output`: the exported files, and the card when the export updated it) to the Hub
    repo `repo_id`."""
    from huggingface_hub import HfApi

    HfApi().upload_folder(repo_id=repo_id, folder_path=str(output), allow_patterns=list(files),
                          commit_message="ONNX export (export.py)")
