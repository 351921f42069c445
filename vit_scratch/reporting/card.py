"""The model card: Hub metadata (model-index results), the results table, the recipe, the usage snippet."""

import dataclasses
import json
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from vit_scratch.atomic import PathLike, write_text
from vit_scratch.backends import ONNX_FILES, onnx_files
from vit_scratch.config.schema import TRAINING_DEFAULTS

TAGS = ["image-classification", "vision-transformer", "vit_scratch", "custom_code"]
# TrainingArguments the card's recipe always shows (besides the keys the config set and TRAINING_DEFAULTS): the
# hyperparameters a reader compares runs by. The other ~150 fields are transformers' defaults and would bury them.
RECIPE_KEYS = ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
               "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "optim",
               "max_grad_norm", "label_smoothing_factor", "ema_decay", "bf16", "fp16", "seed"]
PLACEHOLDER = "path/to/output_dir"  # the usage snippet's model when the card knows no Hub id
HELD_OUT_SPLIT = "train (held-out validation)"  # the card's split name for dataset.validation_size's hold-out


def effective_config(experiment, model_config=None) -> dict:
    """The configuration as run, defaults included: the model card's recipe.

    `experiment.raw` holds only what was given; a reader needs every value used. dataset: every DataArguments
    field; model: every ViTScratchConfig field (and extra keys given, such as num_labels or pretrained) of
    `model_config`, the config the model was built with (with `model.pretrained` the architecture is the
    checkpoint's, not `experiment.model`'s); training: the keys given, TRAINING_DEFAULTS and RECIPE_KEYS, as the
    TrainingArguments hold them (enums as values, tokens masked).
    """
    model = model_config if model_config is not None else experiment.model
    model_fields = {name: getattr(model, name) for name in type(model).__annotations__}
    given = {key: value for key, value in experiment.raw["model"].items() if key not in model_fields}
    training = experiment.training.to_dict()
    keys = dict.fromkeys([*RECIPE_KEYS, *TRAINING_DEFAULTS, *experiment.raw["training"]])
    return {"dataset": dataclasses.asdict(experiment.dataset), "model": {**model_fields, **given},
            "training": {key: training[key] for key in keys if key in training}}


def device_name(device: torch.device) -> str:
    """The card's hardware: the GPU's name on CUDA, else the device type ("CPU", "MPS")."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()


def write_model_card(path: PathLike, *, model_name: str, results: dict, config: dict, dataset_name: str,
                     class_names: list[str], repo_id: str | None, curves_png: str, confusion_png: str | None = None,
                     preview_png: str | None = None, hardware: str | None = None, test_split: str | None = "test",
                     config_file: str | None = None, base_model: str | None = None) -> None:
    """Write README.md (`path` is the file, or the model folder): Hub metadata, results, figures, usage, recipe.

    results: `all_results.json`'s keys (missing ones are left out of the table); config: the recipe as run
    (`effective_config`); repo_id: the Hub id the usage snippet loads, else a placeholder the reader replaces;
    hardware: what trained it (`device_name`); test_split: the dataset's split the test results are on;
    config_file: the file holding the configuration as given, linked from the card; base_model: the weights
    training started from (`model.pretrained`), a Hub id in the metadata and named in the text. The metadata is
    built with huggingface_hub's ModelCardData, so the Hub (and `ModelCard.load`) read the results back as
    eval_results.
    """
    path = Path(path)
    if path.suffix.lower() != ".md":
        path = path / "README.md"
    hub_dataset = _hub_id(dataset_name)
    eval_results = _eval_results(results, hub_dataset or Path(dataset_name).name, hub_dataset is not None,
                                 test_split or "test")
    metadata = ModelCardData(library_name="transformers", pipeline_tag="image-classification", tags=TAGS,
                             datasets=[hub_dataset] if hub_dataset else None, metrics=["accuracy"],
                             base_model=_hub_id(base_model) if base_model else None,
                             model_name=model_name if eval_results else None, eval_results=eval_results or None)
    dataset = f"[`{hub_dataset}`](https://huggingface.co/datasets/{hub_dataset})" if hub_dataset else \
        f"a local dataset (`{Path(dataset_name).name}`)"
    rows = "\n".join(f"| {label} | {value} |" for label, value in _results_rows(results, hardware))
    best = config.get("training", {}).get("load_best_model_at_end")
    final = "the best checkpoint (`load_best_model_at_end`)" if best else "the model at the last step"
    ema = config.get("training", {}).get("ema_decay")
    if ema is not None:
        final += (f"; its weights are the exponential moving average of the training weights (`ema_decay={ema}`"
                  f"{', warmed up' if config['training'].get('ema_warmup') else ''}), which every evaluation used")
    figures = [f"![training curves]({curves_png})\n\nTraining loss and validation accuracy against the optimizer "
               f"step; the star is the final model, {final}, evaluated again after training."]
    if confusion_png:
        figures.append(f"![confusion matrix]({confusion_png})\n\nOn the test split; each row is a true class, "
                       "divided by its number of images (the diagonal is each class's recall).")
    if preview_png:
        figures.append(f"![augmentation preview]({preview_png})\n\nThe training images after the augmentation of the "
                       "configuration below (`augmentation_preview.png`, written at the start of training).")
    body = f"""
# {model_name}

A Vision Transformer written from scratch (model type `vit_scratch`, custom code: load it with
`trust_remote_code=True`), {f"fine-tuned from `{base_model}`" if base_model else "trained from scratch"} on
{dataset} with the Hugging Face `Trainer`.
Classes ({len(class_names)}): {", ".join(f"`{name}`" for name in class_names)}.

## Results

| Metric | Value |
|---|---|
{rows}

{_results_notes(results, config, test_split or "test")}

{chr(10).join(f"{figure}{chr(10)}" for figure in figures)}
## Usage

{_usage(repo_id)}
{onnx_section(onnx_files(path.parent), repo_id)}
## Training configuration

The recipe as run, defaults included: every dataset and model field; of the `TrainingArguments`, the keys the
configuration set, this project's defaults and the main hyperparameters.{_config_link(config_file)}

```json
{json.dumps(config, indent=2, default=str)}
```
"""
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    write_text(path, str(card))


def _hub_id(name: str) -> str | None:
    """`name` when it is a Hub repo id (a dataset, a model); None for a local path: nothing to the Hub's metadata."""
    if Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _eval_results(results: dict, dataset: str, on_hub: bool, test_split: str) -> list[EvalResult]:
    """The model-index: test accuracy and top-5 on the test split, validation accuracy on the images held out of
    the training split, named HELD_OUT_SPLIT so that it is never mistaken for a dataset's own "validation" split."""
    held_out = HELD_OUT_SPLIT
    wanted = [("test_accuracy", "accuracy", "Test accuracy", test_split),
              ("test_top_5_accuracy", "top_5_accuracy", "Test top-5 accuracy", test_split),
              ("eval_accuracy", "accuracy", "Validation accuracy", held_out)]
    return [EvalResult(task_type="image-classification", task_name="Image Classification",
                       dataset_type=dataset if on_hub else "local", dataset_name=dataset, dataset_split=split,
                       metric_type=metric, metric_name=name, metric_value=float(results[key]))
            for key, metric, name, split in wanted if key in results and split is not None]


def _results_rows(results: dict, hardware: str | None) -> list[tuple[str, str]]:
    """The results table as (label, value) rows in reading order: test, validation, cost of training, the run.

    Keys that are missing are left out; everything else stays in all_results.json (train_total_flos, ...).
    """

    def on(key: str) -> str:  # how many images an accuracy is on
        return f" ({results[key]:,} images)" if key in results else ""

    values = dict(results)
    world = f"world size {results['world_size']}" if "world_size" in results else None
    if hardware or world:
        values["hardware"] = ", ".join(part for part in (hardware, world) if part)
    wall = "train_wall_seconds" if "train_wall_seconds" in results else "train_runtime"
    table = [(f"Test accuracy{on('test_images')}", "test_accuracy", _percent),
             (f"Test top-5 accuracy{on('test_images')}", "test_top_5_accuracy", _percent),
             ("Test loss", "test_loss", _decimal),
             (f"Validation accuracy{on('eval_images')}", "eval_accuracy", _percent),
             (f"Validation top-5 accuracy{on('eval_images')}", "eval_top_5_accuracy", _percent),
             ("Validation loss", "eval_loss", _decimal),
             ("Training time", wall, _duration),
             ("Training throughput", "train_samples_per_second", lambda v: f"{v:,.1f} images/s"),
             ("Hardware", "hardware", str),
             ("Parameters", "num_parameters", _count),
             ("Training images", "train_images", lambda v: f"{v:,}"),
             ("Epochs", "epoch", lambda v: f"{round(v, 2):g}"),
             ("Seed", "seed", str)]
    return [(label, show(values[key])) for label, key, show in table if key in values]


def _results_notes(results: dict, config: dict, test_split: str) -> str:
    """What the table's image counts mean: validation is held out of training; the test split may be cut short."""
    notes = []
    if "eval_accuracy" in results:
        notes.append("Validation images are held out of the training split (`dataset.validation_size`).")
    if "test_accuracy" in results:
        notes.append(f"The `{test_split}` split is evaluated once, after training.")
        limit = config.get("dataset", {}).get("max_test_samples")
        if limit is not None and results.get("test_images", limit) >= limit:  # a smaller split was not cut
            notes.append(f"`dataset.max_test_samples={limit}` kept only its first {limit:,} images: compare these "
                         "test results only with results on the same images.")
    return " ".join(notes)


def _usage(repo_id: str | None) -> str:
    """The loading snippet: from the Hub id when there is one, else from a placeholder the reader replaces."""
    model = repo_id or PLACEHOLDER
    replace = "" if repo_id else (f"Replace `{PLACEHOLDER}` with the folder holding this card (the run's "
                                  "`training.output_dir`), or with the model's Hub id once it is uploaded.\n\n")
    return f"""{replace}```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

processor = AutoImageProcessor.from_pretrained("{model}")
model = AutoModelForImageClassification.from_pretrained("{model}", trust_remote_code=True)
inputs = processor(images=Image.open("image.png").convert("RGB"), return_tensors="pt")
print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])

classifier = pipeline("image-classification", model="{model}", trust_remote_code=True)
print(classifier("image.png"))
```"""


ONNX_HEADING = "## ONNX"
ONNX_WEIGHTS = {ONNX_FILES["fp32"]: "fp32",
                ONNX_FILES["int8"]: "int8 (MatMul/Gemm weights; the patch convolution fp32)"}


def onnx_section(files: list[tuple[str, int]], repo_id: str | None) -> str:
    """The card's ONNX section for the ONNX files the folder holds ((path, bytes), from backends.onnx_files):
    what each is and how to run it without PyTorch; "" when there are none."""
    if not files:
        return ""
    model = repo_id or PLACEHOLDER
    rows = "\n".join(f"| `{name}` | {ONNX_WEIGHTS[name]} | {size / 1e6:.1f} MB |" for name, size in files)
    first = files[0][0]
    return f"""{ONNX_HEADING}

Exported with `export.py` (input `pixel_values`, any batch size; output `logits`), checked against the PyTorch
model. They run with onnxruntime, numpy and Pillow alone (no torch, no transformers):

| File | Weights | Size |
|---|---|---|
{rows}

```python
import json

import numpy as np
import onnxruntime
from PIL import Image

{_onnx_folder(repo_id)}
p = json.load(open(f"{{folder}}/preprocessor_config.json"))
labels = json.load(open(f"{{folder}}/config.json"))["id2label"]
image = Image.open("image.png").convert("RGB").resize((p["size"]["width"], p["size"]["height"]), p["resample"])
x = (np.asarray(image).transpose(2, 0, 1) * p["rescale_factor"]).astype(np.float32)
x = (x - np.float32(p["image_mean"])[:, None, None]) / np.float32(p["image_std"])[:, None, None]
session = onnxruntime.InferenceSession(f"{{folder}}/{first}")
print(labels[str(session.run(None, {{"pixel_values": x[None]}})[0].argmax())])
```

With this project installed: `python predict.py {model} image.png --backend onnxruntime --onnx-file {first}`.
"""


def _onnx_folder(repo_id: str | None) -> str:
    if repo_id:
        return f"from huggingface_hub import snapshot_download\n\nfolder = snapshot_download(\"{repo_id}\")"
    return f"folder = \"{PLACEHOLDER}\"  # the folder holding this card"


def update_onnx_section(path: Path, repo_id: str | None) -> bool:
    """Rewrite the ONNX section of the card `path` (README.md) from the ONNX files beside it: replaced where it is,
    else placed before the training configuration. False (nothing written) when there is no card."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    section = onnx_section(onnx_files(path.parent), repo_id)
    start = text.find(f"\n{ONNX_HEADING}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end + 1:] if end >= 0 else "")
    else:
        anchor = text.find("\n## Training configuration")
        anchor = anchor if anchor >= 0 else len(text)
        text = text[: anchor + 1] + section + "\n" + text[anchor + 1:]
    write_text(path, text)
    return True


def _config_link(config_file: str | None) -> str:
    return (f" The configuration as given (config file and command-line overrides) is "
            f"[`{config_file}`]({config_file}).") if config_file else ""


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _decimal(value: float) -> str:
    return f"{value:.4f}"


def _duration(seconds: float) -> str:
    """42.5 s, 3 min 16 s, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _count(count: int) -> str:
    """950, 12.2 k, 10.4 M."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)
