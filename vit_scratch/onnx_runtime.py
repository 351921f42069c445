"""A saved model's ONNX export -> predictions, with onnxruntime, numpy and Pillow only: no torch, no transformers.

What a CPU server or a small container needs to answer requests (about 60 MB installed instead of torch's GB). A
model folder holds `config.json` (id2label, the image size), `preprocessor_config.json` (resize, rescale,
mean/std) and `onnx/model.onnx` (fp32) or `onnx/model_quantized.onnx` (int8), as `export.py` writes them. Two ways
in, the same two as inference.py's torch backend, with the same arithmetic:

- `pixel_values` prepares PIL images exactly as the saved `ViTImageProcessor` (its PIL backend) does: PIL resize with
  the saved resample filter (bicubic), `x * rescale_factor` in float64 cast to float32, `(x - mean) / std` in float32;
- `normalize` takes uint8 images already at the model's size (what `data.py` decodes) and applies training's
  evaluation arithmetic (inference.normalize): `x / 255` and `(x - mean) / std` in float32.

A Hub id is fetched with huggingface_hub (installed with this package; it imports no torch either).
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from vit_scratch.backends import ONNX_FILES
from vit_scratch.errors import ConfigError, require_packages
from vit_scratch.image_files import check_images, find_images, open_image
from vit_scratch.sources import is_local_path


def local_folder(source: str, onnx_file: str) -> Path:
    """The folder holding `source`'s config, preprocessor config and `onnx_file`: `source` itself when it is a
    folder, else those three files fetched from the Hub repo `source`."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if is_local_path(source):
        raise ConfigError(f"model {source!r}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=["config.json", "preprocessor_config.json", onnx_file]))
    except Exception as error:  # offline, no such repo, no access: one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model {source!r}: not a folder, and the Hub does not give it ({reason})") from None


class OnnxClassifier:
    """An exported model with its config and image processor settings: images -> logits -> labels and scores."""

    def __init__(self, source: str, onnx_file: str = ONNX_FILES["fp32"], threads: int | None = None):
        require_packages(("onnxruntime",), "the onnxruntime backend")
        import onnxruntime as ort

        folder = local_folder(source, onnx_file)
        self.config = _read_json(folder / "config.json", source)
        self.processor = _read_json(folder / "preprocessor_config.json", source)
        if "id2label" not in self.config or "image_size" not in self.config:
            raise ConfigError(f"model {source!r}: config.json has no id2label / image_size: not a saved image "
                              "classifier")
        self.id2label = {int(i): name for i, name in self.config["id2label"].items()}
        self.image_size = int(self.config["image_size"])
        self.num_channels = int(self.config.get("num_channels", 3))
        path = folder / onnx_file
        if not path.is_file():
            raise ConfigError(f"model {source!r}: no {onnx_file} (write it with `python export.py {source}`)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types: a file that is not a model
            raise ConfigError(f"{path}: onnxruntime cannot load it ({str(error).strip().splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    # ------------------------------------------------------------ inputs

    def pixel_values(self, images: Sequence[PIL.Image.Image]) -> np.ndarray:
        """PIL images -> float32 (B, C, H, W), exactly as the saved ViTImageProcessor (PIL backend) prepares them."""
        p = self.processor
        arrays = []
        for image in images:
            if p.get("do_resize", True):
                height, width = _target_size(p.get("size"), self.image_size)
                image = image.resize((width, height), PIL.Image.Resampling(p.get("resample", 2)))
            x = np.asarray(image)
            x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, H, W)
            if p.get("do_rescale", True):
                x = (x.astype(np.float64) * p.get("rescale_factor", 1 / 255)).astype(np.float32)
            x = x.astype(np.float32)
            if p.get("do_normalize", True):
                x = (x - _channels(p["image_mean"], x)) / _channels(p["image_std"], x)
            arrays.append(x)
        return np.stack(arrays)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, C, S, S) at the model's size -> float32 inputs by training's evaluation arithmetic
        (inference.normalize: `x / (1 / rescale_factor)`, then `(x - mean) / std`, all in float32)."""
        p = self.processor
        x = images.astype(np.float32)
        if p.get("do_rescale", True):
            x = x / np.float32(1 / p.get("rescale_factor", 1 / 255))
        if p.get("do_normalize", True):
            x = (x - _channels(p["image_mean"], x[0])) / _channels(p["image_std"], x[0])
        return x

    # ------------------------------------------------------------ outputs

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        """float32 (B, C, S, S) -> float32 logits (B, K)."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """What `pipeline("image-classification")` reports: softmax for single-label models, sigmoid for multi-label
        (or one-label) ones, the raw values for regression (inference.scores)."""
        problem = self.config.get("problem_type")
        if problem == "regression":
            return logits
        if problem == "multi_label_classification" or len(self.id2label) == 1:
            return 1 / (1 + np.exp(-logits))
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def predict(self, images: Sequence[PIL.Image.Image], top_k: int = 5) -> list[list[dict]]:
        """Per image, the top_k [{"label", "score"}] (highest first)."""
        scores = self.scores(self.logits(self.pixel_values(images)))
        top = np.argsort(-scores, axis=-1, kind="stable")[:, : min(top_k, scores.shape[-1])]
        return [[{"label": self.id2label[int(i)], "score": float(row[i])} for i in ids]
                for row, ids in zip(scores, top, strict=True)]


def predict(source: str, inputs: Sequence[str], *, top_k: int, batch_size: int,
            onnx_file: str = ONNX_FILES["fp32"]) -> list[dict]:
    """inference.predict's results ([{"path", "predictions": [{"label", "score"}, ...]}]) from the ONNX file."""
    paths = find_images(inputs)
    check_images(paths)
    model = OnnxClassifier(source, onnx_file)
    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start: start + batch_size]
        images = [open_image(path, model.num_channels) for path in batch]
        for path, predictions in zip(batch, model.predict(images, top_k), strict=True):
            results.append({"path": str(path), "predictions": predictions})
    return results


def _read_json(path: Path, source: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model {source!r}: no {path.name}: not a saved model folder") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"model {source!r}: cannot read {path.name} ({error})") from None


def _target_size(size, image_size: int) -> tuple[int, int]:
    """(height, width) of the processor's `size`: {"height", "width"} (what train.py saves), else the model's."""
    if isinstance(size, dict) and size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    return image_size, image_size


def _channels(values, x: np.ndarray) -> np.ndarray:
    """A per-channel mean or std as float32 (C, 1, 1) for a (C, H, W) image (one value: every channel)."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, x.shape[0])
    return values.reshape(-1, 1, 1)
