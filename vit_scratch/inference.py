"""Using a saved model: load it with its image processor, classify batches, and see where it looks (attention rollout).

`validate.py` and `predict.py` are thin CLIs over this module. A model is a folder `save_pretrained` wrote (train.py's
output) or a Hub id; its `preprocessor_config.json` says how pixels become model inputs (the size, and the training
data's mean/std), and nothing here recomputes those. Two ways in, one normalisation:

- `normalize` takes uint8 images already at the model's size (what `data.py` decodes for training and validation)
  and applies the processor's rescale and mean/std exactly as the Trainer's evaluation does (`x / 255`, then
  `(x - mean) / std`): `validate.py` reproduces training's reported accuracy and loss.
- `open_image` + the processor itself take any image file, as `pipeline("image-classification")` does (EXIF
  orientation, RGB, the processor's resize): `predict.py` gives the pipeline's labels and scores.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

import modeling_vit_scratch  # noqa: F401 (registers vit_scratch with the Auto classes)
from vit_scratch.atomic import atomic_path
from vit_scratch.backends import PRECISIONS
from vit_scratch.errors import ConfigError, DataError
from vit_scratch.image_files import check_images, find_images, open_image
from vit_scratch.training.checkpoints import load_complete_model, local_source_problem


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(source: str, device: torch.device | None = None, trust_remote_code: bool = False):
    """(model in eval mode on `device`, its image processor) from a saved folder or a Hub id.

    A `vit_scratch` model loads with this package's classes (its `__init__`, run before this module, registers
    them), never with the code files copied beside the weights; another custom model's code runs only with
    `trust_remote_code`, as in transformers. Weights that do not cover the model, a folder that is not a saved
    model, or a missing/unreadable `preprocessor_config.json` raise ConfigError naming `source`.
    """
    if problem := local_source_problem(source):
        raise ConfigError(f"model {source!r}: {problem}")
    try:
        model = load_complete_model(source, AutoModelForImageClassification, trust_remote_code=trust_remote_code)
    except ConfigError as error:
        if "custom code" not in str(error):
            raise
        raise ConfigError(f"model {source!r} is not a vit_scratch model and needs its own code to load: pass "
                          "--trust-remote-code (trust_remote_code=True) to run it") from None
    try:
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:  # OSError (no file), ValueError (bad JSON), ...
        raise ConfigError(f"model {source!r}: cannot load its image processor (preprocessor_config.json): "
                          f"{type(error).__name__}: {str(error).strip().splitlines()[0]}") from None
    height, width = _processor_size(processor, "height"), _processor_size(processor, "width")
    side = model.config.image_size
    if (height, width) != (None, None) and (height, width) != (side, side):
        raise ConfigError(f"model {source!r}: preprocessor_config.json resizes to {height}x{width}, but the model's "
                          f"image_size is {side}")
    return model.eval().to(device or default_device()), processor


def _processor_size(processor, key: str) -> int | None:
    """The image processor's resize target: `size[key]` (height or width), or None when it does not resize."""
    size = getattr(processor, "size", None) or {}
    return getattr(size, key, None) if not isinstance(size, dict) else size.get(key)


def normalize(images: torch.Tensor, processor) -> torch.Tensor:
    """uint8 (B, C, S, S) at the model's size -> float32 model inputs, by the processor's rescale and mean/std.

    The rescale divides by 1 / rescale_factor (255.0 exactly for 1/255) as the Trainer's evaluation does
    (`BatchAugment.normalize`), so the inputs, and so the logits, are bit for bit those of training's evaluation.
    """
    x = images.float()
    if processor.do_rescale:
        x = x / (1 / processor.rescale_factor)
    if processor.do_normalize:
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
        std = torch.as_tensor(processor.image_std, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    return x


AUTOCAST_DTYPES = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16), strict=True))  # None: no autocast


def forward(model, pixel_values: torch.Tensor, output_attentions: bool = False,
            precision: str = "fp32") -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """One batch through the model (eval mode, inference mode, on the model's device) -> float32 CPU logits (B, K)
    and, with `output_attentions`, the per-layer attention weights (B, heads, T, T) on CPU. `precision` "bf16" or
    "fp16" runs under autocast, as the Trainer evaluates a run with `training.bf16` / `fp16`."""
    device = next(model.parameters()).device
    dtype = AUTOCAST_DTYPES[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        outputs = model(pixel_values=pixel_values.to(device), output_attentions=output_attentions)
    attentions = tuple(a.float().cpu() for a in outputs.attentions) if output_attentions else None
    return outputs.logits.float().cpu(), attentions


def batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start: start + batch_size]


def scores(logits: torch.Tensor, config) -> torch.Tensor:
    """What `pipeline("image-classification")` reports for logits: softmax for single-label models, sigmoid for
    multi-label (or one-label) ones, the raw values for regression."""
    if config.problem_type == "regression":
        return logits
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return logits.sigmoid()
    return logits.softmax(dim=-1)


# ---------------------------------------------------------------- attention rollout


def attention_rollout(attentions: Sequence[torch.Tensor], pooling: str = "cls") -> torch.Tensor:
    """How much each patch flows into the pooled token (Abnar & Zuidema 2020, "Quantifying Attention Flow").

    attentions: per layer (B, heads, T, T) with token 0 the CLS token and tokens 1.. the patches. Per layer: the
    heads' mean, plus the identity (the residual connection), rows renormalised; the layers multiplied, last on the
    left (row i of the result: how token i of the output draws on the input tokens). Returns (B, T - 1), the patch
    columns of the row that reaches the head: the CLS row for `pooling="cls"`; for `pooling="mean"`, whose head
    averages the patch tokens and never reads the CLS token, the mean of the patch tokens' rows.
    """
    rollout = None
    for layer in attentions:
        a = layer.float().mean(dim=1)  # (B, T, T)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    rows = rollout[:, 0] if pooling == "cls" else rollout[:, 1:].mean(dim=1)  # (B, T)
    return rows[:, 1:]


def attention_overlay(image: PIL.Image.Image, weights: torch.Tensor) -> PIL.Image.Image:
    """The image and, beside it, the image under the patch weights (grid side x side, one per patch) as a heat map,
    in one RGB image: the heat map alone hides what it points at.

    The map is min-max scaled (brightest = the patch that matters most), upsampled bilinearly to the image (small
    images are first enlarged to at least 256 pixels, nearest, so that 32 x 32 ones can be seen), blended at 50%.
    """
    from matplotlib import colormaps

    side = int(round(weights.numel() ** 0.5))
    grid = weights.reshape(side, side).float()
    grid = (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-12)
    image = image.convert("RGB")
    scale = max(1, 256 // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), PIL.Image.Resampling.NEAREST)
    heat = PIL.Image.fromarray(grid.numpy().astype(np.float32), mode="F").resize(image.size,
                                                                                 PIL.Image.Resampling.BILINEAR)
    colours = colormaps["jet"](np.clip(np.asarray(heat), 0, 1))[..., :3]  # (H, W, 3) in [0, 1]
    overlay = PIL.Image.blend(image, PIL.Image.fromarray((colours * 255).round().astype(np.uint8)), alpha=0.5)
    gap = 8
    pair = PIL.Image.new("RGB", (2 * image.width + gap, image.height), "white")
    pair.paste(image, (0, 0))
    pair.paste(overlay, (image.width + gap, 0))
    return pair


def save_attention_overlay(image: PIL.Image.Image, weights: torch.Tensor, path: Path) -> None:
    """`attention_overlay` written as one PNG (atomically)."""
    with atomic_path(path) as tmp:
        attention_overlay(image, weights).save(tmp, format="PNG")


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """One PNG name per image: its file name with `.png` for the extension; a repeated name gets `-2`, `-3`, ..."""
    names = []
    for path in paths:
        name, n = f"{path.stem}.png", 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}.png"
        names.append(name)
    return names


def check_class_names(dataset_names: list[str] | None, labels: torch.Tensor, id2label: dict, where: str) -> list[str]:
    """The model's class names, after checking that the dataset's classes are the model's (same names, same order)
    or, for plain integer labels, that every label is one of the model's classes."""
    names = [id2label[i] for i in range(len(id2label))]
    if dataset_names is None:
        top = int(labels.max())
        if top >= len(names):
            raise DataError(f"{where}: label {top}, but the model has {len(names)} classes")
    elif len(dataset_names) != len(names):
        raise DataError(f"{where} has {len(dataset_names)} classes ({', '.join(dataset_names)}), the model "
                        f"{len(names)} ({', '.join(names)}): not the classes it was trained on")
    else:
        for i, (ours, theirs) in enumerate(zip(dataset_names, names, strict=True)):
            if ours != theirs:
                raise DataError(f"{where}: class {i} is {ours!r} in the dataset but {theirs!r} in the model's "
                                f"id2label: not the classes it was trained on (or in another order)")
    return names


def evaluate(source: str, data_args, split_name: str, *, batch_size: int, precision: str,
             trust_remote_code: bool = False, onnx_file: str | None = None) -> tuple[dict, np.ndarray, list[str]]:
    """(metrics, confusion matrix, class names) of the saved model on one split, decoded exactly as for training
    and normalised by its processor: accuracy, top-5, loss, per-class accuracy and counts. With `onnx_file`, that
    ONNX file of the model (onnxruntime) computes the logits from the same inputs instead of the torch model."""
    from transformers import EvalPrediction

    from vit_scratch.data import load_split
    from vit_scratch.metrics import build_compute_metrics, confusion_matrix

    if onnx_file is not None:
        from vit_scratch.onnx_runtime import OnnxClassifier

        onnx = OnnxClassifier(source, onnx_file)
        image_size, num_channels, id2label = onnx.image_size, onnx.num_channels, onnx.id2label

        def logits_of(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(onnx.logits(onnx.normalize(images.numpy())))
    else:
        model, processor = load_model(source, trust_remote_code=trust_remote_code)
        image_size, num_channels, id2label = model.config.image_size, model.config.num_channels, model.config.id2label
        device = next(model.parameters()).device

        def logits_of(images: torch.Tensor) -> torch.Tensor:
            return forward(model, normalize(images.to(device), processor), precision=precision)[0]
    split, dataset_names = load_split(data_args, split_name, image_size, num_channels)
    names = check_class_names(dataset_names, split.labels, id2label,
                              f"dataset {data_args.name!r}, split {split_name!r}")
    logits = torch.cat([logits_of(images) for images in batches(split.images, batch_size)])
    labels = split.labels
    metrics = build_compute_metrics(top_k=5)(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    matrix = confusion_matrix(logits.argmax(-1).numpy(), labels.numpy(), len(names))
    per_class = {name: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
                 for i, name in enumerate(names)}
    results = {**metrics, "loss": torch.nn.functional.cross_entropy(logits, labels).item(),
               "num_images": len(labels), "per_class_accuracy": per_class,
               "images_per_class": dict(zip(names, matrix.sum(1).tolist(), strict=True)),
               "confusion_matrix": matrix.tolist()}  # rows: true class, columns: predicted, in id2label's order
    return results, matrix, names


def predict(source: str, inputs: Sequence[str], *, top_k: int, batch_size: int, maps: Path | None = None,
            trust_remote_code: bool = False) -> list[dict]:
    """[{"path", "predictions": [{"label", "score"}, ...]}] for every image file under `inputs`, as the
    image-classification pipeline scores them; with `maps`, each image's attention-rollout overlay goes there."""
    paths = find_images(inputs)
    check_images(paths)
    model, processor = load_model(source, trust_remote_code=trust_remote_code)
    config = model.config
    top_k = min(top_k, config.num_labels)
    names = iter(overlay_names(paths))
    results = []
    for batch in batches(paths, batch_size):
        images = [open_image(path, config.num_channels) for path in batch]
        predictions, weights = classify(model, processor, images, top_k=top_k, rollout=maps is not None)
        results += [{"path": str(path), "predictions": p} for path, p in zip(batch, predictions, strict=True)]
        if weights is not None:
            for image, weight in zip(images, weights, strict=True):
                save_attention_overlay(image, weight, maps / next(names))
    return results


def classify(model, processor, images: Sequence[PIL.Image.Image], *, top_k: int,
             rollout: bool = False) -> tuple[list[list[dict]], torch.Tensor | None]:
    """Opened images (`open_image`) -> per image its top-k [{"label", "score"}] as the image-classification pipeline
    scores them and, with `rollout`, the attention rollout (B, patches). predict.py and the demo page both call this."""
    config = model.config
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    logits, attentions = forward(model, pixel_values, output_attentions=rollout)
    top = scores(logits, config).topk(min(top_k, config.num_labels), dim=-1)
    predictions = [[{"label": config.id2label[i], "score": v} for v, i in zip(values, ids, strict=True)]
                   for values, ids in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
    weights = attention_rollout(attentions, getattr(config, "pooling", "cls")) if rollout else None
    return predictions, weights
