"""Experiment configuration: the `dataset` section's dataclasses, and JSON/INI/CLI -> validated config.

A config file has three sections that map 1:1 onto code:
  dataset  -> `DataArguments` (with `augmentation` -> `AugmentArguments`)
  model    -> `ViTScratchConfig` fields
  training -> `transformers.TrainingArguments` fields
"""

import builtins
import copy
import dataclasses
import difflib
import enum
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError


class ConfigError(ValueError):
    """A bad config key or value, raised before any data is loaded; the message names the key."""


def _check(ok: bool, key: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")


@dataclass
class AugmentArguments:
    """Batch augmentation on the training device (`dataset.augmentation.*`); evaluation sees none of it."""

    random_crop_padding: int = 4  # pad each side by this many pixels (reflect), crop back at random; 0 = off
    horizontal_flip: bool = True  # flip left-right with probability 0.5
    # "randaugment" (torchvision's RandAugment), "trivialaugment" (TrivialAugmentWide) or "none"; every image draws
    # its own ops. null: "randaugment" when randaugment_num_ops > 0, else "none" (configs written before `policy`).
    policy: str | None = None
    randaugment_num_ops: int | None = None  # RandAugment: ops applied in turn to each image; null = 2 (torchvision)
    randaugment_magnitude: int = 9  # RandAugment magnitude: bin 0..30 of torchvision's 31 (9 = its default)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup of pairs of images and their labels; 0 = off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) cutmix; with mixup too, each batch picks one at random; 0 = off
    mix_prob: float = 1.0  # probability that a batch is mixed at all (when mixup or cutmix is on)
    random_erasing_prob: float = 0.0  # probability of erasing one random rectangle per image; 0 = off

    def __post_init__(self):
        p = "dataset.augmentation."
        for name in ("random_crop_padding", "randaugment_num_ops", "randaugment_magnitude"):
            value = getattr(self, name)
            _check(value is None and name == "randaugment_num_ops" or
                   isinstance(value, int) and not isinstance(value, bool) and value >= 0, p + name, value,
                   "must be an integer >= 0")
        _check(self.randaugment_magnitude <= 30, p + "randaugment_magnitude", self.randaugment_magnitude,
               "must be a magnitude bin in 0..30 (torchvision's 31 bins)")
        _check(self.policy is None or self.policy in AUGMENT_POLICIES, p + "policy", self.policy,
               f"must be one of {', '.join(AUGMENT_POLICIES)} (or null)")
        ops = self.randaugment_num_ops
        if self.policy is None:  # resolved here, so the rest of the code sees one of AUGMENT_POLICIES
            self.policy = "randaugment" if ops else "none"
        if self.policy == "randaugment":
            _check(ops is None or ops > 0, p + "randaugment_num_ops", ops,
                   "must be >= 1 with policy 'randaugment' (policy 'none' turns it off)")
            self.randaugment_num_ops = 2 if ops is None else ops
        else:
            _check(not ops, p + "randaugment_num_ops", ops, f"applies to policy 'randaugment' only, not "
                   f"{self.policy!r}")
            self.randaugment_num_ops = 0
        _check(isinstance(self.horizontal_flip, bool), p + "horizontal_flip", self.horizontal_flip,
               "must be true or false")
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, p + name, value,
                   "must be a number >= 0 (0 turns it off)")
        for name in ("mix_prob", "random_erasing_prob"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1, p + name,
                   value, "must be a probability in [0, 1]")


@dataclass
class DataArguments:
    """Where the images come from and how they are split (`dataset.*`)."""

    # A Hub dataset id, or a local path: a folder in the Hub layout (parquet/arrow files), a `save_to_disk`
    # folder, an image folder (CLASS/*.png), a `cifar-10-python.tar.gz` archive or its `cifar-10-batches-py/`.
    name: str = "uoft-cs/cifar10"
    revision: str | None = None  # Hub revision (branch, tag or commit) of `name`
    cache_dir: str | None = None  # datasets' cache folder (decoded uint8 arrays are cached there too)
    train_split: str = "train"
    test_split: str | None = "test"  # evaluated once at the end; None = no test evaluation
    image_column: str | None = None  # None: the first of `img`, `image` that exists
    label_column: str | None = None  # None: the first of `label`, `labels` that exists
    validation_size: int = 5000  # images held out of the train split for evaluation during training; 0 = none
    validation_seed: int = 0  # seed of that hold-out (independent of the training seed, so runs compare)
    max_train_samples: int | None = None  # keep only the first N training images (after the hold-out)
    max_eval_samples: int | None = None  # keep only the first N validation and test images
    augmentation: AugmentArguments = field(default_factory=AugmentArguments)

    def __post_init__(self):
        if isinstance(self.augmentation, dict):
            self.augmentation = AugmentArguments(**self.augmentation)
        _check(isinstance(self.name, str) and bool(self.name), "dataset.name", self.name,
               "must be a Hub dataset id or a local path")
        for name in ("train_split",):
            _check(isinstance(getattr(self, name), str), "dataset." + name, getattr(self, name), "must be a string")
        for name in ("revision", "cache_dir", "test_split", "image_column", "label_column"):
            value = getattr(self, name)
            _check(value is None or isinstance(value, str), "dataset." + name, value, "must be a string or null")
        for name in ("validation_size", "validation_seed"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, "dataset." + name, value,
                   "must be an integer >= 0")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
                   "dataset." + name, value, "must be a positive integer or null")


# ---------------------------------------------------------------------------------------------------------------
# File + overrides -> validated experiment
# ---------------------------------------------------------------------------------------------------------------

SECTIONS = ("dataset", "model", "training")

# Where this project's defaults differ from `TrainingArguments`' own; a config file's values win over these.
TRAINING_DEFAULTS = {
    "output_dir": "outputs/vit-scratch-cifar10",
    "eval_strategy": "epoch",  # validation accuracy after every epoch...
    "save_strategy": "epoch",  # ...and a checkpoint beside it
    "save_total_limit": 2,
    "load_best_model_at_end": True,  # the saved model is the best on validation, never on test
    "metric_for_best_model": "accuracy",
    "logging_steps": 50,
    "report_to": "none",
    "remove_unused_columns": False,  # our datasets yield exactly the model's inputs
    "dataloader_pin_memory": False,  # the images already live on the training device
    "logging_nan_inf_filter": False,  # a host sync every step; trainer.py checks for NaN/inf when it logs instead
    "label_names": ["labels"],
}

# Model keys that are not fields of ViTScratchConfig but are accepted in the `model` section.
MODEL_EXTRA_KEYS = {
    "attn_implementation": "str | None",  # eager, sdpa, flash_attention_2, flex_attention
    "num_labels": "int | None",  # optional: checked against the number of classes in the data
}

# Ranges that TrainingArguments itself does not check.
TRAINING_RANGES = {
    "learning_rate": (lambda v: v > 0, "must be > 0"),
    "num_train_epochs": (lambda v: v > 0, "must be > 0"),
    "per_device_train_batch_size": (lambda v: v > 0, "must be a positive integer"),
    "per_device_eval_batch_size": (lambda v: v > 0, "must be a positive integer"),
    "gradient_accumulation_steps": (lambda v: v > 0, "must be a positive integer"),
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "label_smoothing_factor": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "max_grad_norm": (lambda v: v >= 0, "must be >= 0 (0 turns clipping off)"),
    "warmup_steps": (lambda v: v >= 0, "must be >= 0 (a fraction of the run when < 1)"),
}

# Keys refused in a config file, with the reason.
FORBIDDEN_KEYS = {
    "training.hub_token": "a token never goes into a config file; use HF_TOKEN or `hf auth login`",
    "training.dataloader_num_workers": "the images live on the training device; there is nothing for workers to do",
    "training.dataloader_drop_last": "training always drops its last partial batch (every step the same shapes) and "
                                     "evaluation never does (every image counts); see trainer.py",
    "training.enable_jit_checkpoint": "SIGTERM already saves a checkpoint at the end of the current step and stops "
                                      "(synchronised across processes, resumable exactly); see trainer.py",
}


@dataclass
class Experiment:
    """A validated experiment: what `train.py` builds everything from."""

    dataset: DataArguments
    model: dict  # keyword arguments of ViTScratchConfig (num_labels/id2label are added from the data)
    training: "TrainingArguments"  # noqa: F821 (imported lazily: it initialises distributed state)
    raw: dict  # the merged sections as given, for the model card and all_results.json


def _closest(key: str, choices) -> str:
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _type_ok(value, annotation) -> bool:
    """Does a JSON value fit a dataclass field annotation (a type, a union, an Enum, a Literal or their strings)?"""
    if isinstance(annotation, str):  # forward reference such as "int | None"
        annotation = eval(annotation, {"Literal": typing.Literal, **vars(builtins)})  # noqa: S307 (our own strings)
    if annotation is typing.Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # `SchedulerType | str`: the string must still name a member
            return any(_type_ok(value, e) for e in enums)
        return any(_type_ok(value, a) for a in args)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin is not None:
        annotation = origin  # list[str] -> list, dict[str, Any] -> dict
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {m.value for m in annotation} or isinstance(value, annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _allowed_values(annotation) -> str:
    """A readable description of what an annotation accepts, listing Enum/Literal choices."""
    if isinstance(annotation, str):
        return annotation
    choices = []
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            choices += [m.value for m in arg]
        elif typing.get_origin(arg) is typing.Literal:
            choices += list(typing.get_args(arg))
    if choices:
        return "one of " + ", ".join(map(str, choices))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check_section(section: str, values: dict, annotations: dict):
    """Unknown keys and wrong types fail here, naming the key and the closest valid one."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a JSON object of keys, got {type(values).__name__}")
    for key, value in values.items():
        full = f"{section}.{key}"
        if full in FORBIDDEN_KEYS:
            raise ConfigError(f"{full} is not allowed: {FORBIDDEN_KEYS[full]}")
        if key not in annotations:
            hint = _closest(key, annotations) or (
                f" (allowed: {', '.join(sorted(annotations))})" if len(annotations) <= 30 else " (see the README)")
            raise ConfigError(f"unknown key {full}{hint}")
        annotation = annotations[key]
        if isinstance(annotation, dict):  # a nested section (dataset.augmentation)
            _check_section(full, value, annotation)
        elif not _type_ok(value, annotation):
            allowed = _allowed_values(annotation)
            hint = _closest(value, allowed[len("one of "):].split(", ")) if isinstance(value, str) else ""
            raise ConfigError(f"{full}={value!r} is invalid: expected {allowed}{hint}")


def _dataclass_annotations(cls, nested: dict | None = None) -> dict:
    annotations = {f.name: f.type for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    return {**annotations, **(nested or {})}


def section_annotations() -> dict:
    """Every accepted key of every section, with its type: the single source of truth for validation."""
    from transformers import TrainingArguments

    from ..configuration_vit_scratch import ViTScratchConfig

    model_fields = {name: ViTScratchConfig.__annotations__[name] for name in ViTScratchConfig.__annotations__}
    return {
        "dataset": _dataclass_annotations(DataArguments, {"augmentation": _dataclass_annotations(AugmentArguments)}),
        "model": {**model_fields, **MODEL_EXTRA_KEYS},
        "training": _dataclass_annotations(TrainingArguments),
    }


def parse_value(text: str):
    """A command-line value: JSON when it parses (numbers, true/false/null, lists, objects), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: dict, overrides: list[tuple[str, str]]) -> dict:
    """Apply `--SECTION.KEY VALUE` pairs (nested keys: `--dataset.augmentation.mixup_alpha 0.8`)."""
    config = copy.deepcopy(config)
    for dotted, text in overrides:
        section, _, rest = dotted.partition(".")
        if section not in SECTIONS or not rest:
            raise ConfigError(f"override --{dotted}: expected --SECTION.KEY with SECTION one of {', '.join(SECTIONS)}"
                              f"{_closest(section, SECTIONS)}")
        node = config.setdefault(section, {})
        *parents, leaf = rest.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = parse_value(text)
    return config


def read_config_file(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """JSON (our format) or INI (the older project's). Returns the sections and, for INI, the mapping lines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.suffix.lower() in (".ini", ".cfg"):
        from .ini import read_ini

        return read_ini(path)
    if path.suffix.lower() != ".json":
        raise ConfigError(f"config file {str(path)!r}: expected a .json file (or the older project's .ini)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object with sections {', '.join(SECTIONS)}")
    return config, []


def build_experiment(config: dict, seed: int | None = None) -> Experiment:
    """Validate every section and build the argument objects. Raises ConfigError before any data is touched."""
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section {section!r}{_closest(section, SECTIONS)} (allowed: {', '.join(SECTIONS)})")
    config = {section: copy.deepcopy(config.get(section, {})) for section in SECTIONS}
    if seed is not None:
        config["training"]["seed"] = seed
    annotations = section_annotations()
    for section in SECTIONS:
        _check_section(section, config[section], annotations[section])

    dataset = DataArguments(**config["dataset"])

    from ..configuration_vit_scratch import ViTScratchConfig

    model_kwargs = {k: v for k, v in config["model"].items() if k != "num_labels"}
    try:
        ViTScratchConfig(**model_kwargs)  # every model rule, checked now rather than after loading data
    except (ValueError, StrictDataclassError) as err:
        raise ConfigError(f"model: {_strict_message(err)}") from None

    for key, (rule, allowed) in TRAINING_RANGES.items():
        if key in config["training"] and not rule(config["training"][key]):
            raise ConfigError(f"training.{key}={config['training'][key]!r} is invalid: {allowed}")
    training_kwargs = {**TRAINING_DEFAULTS, **config["training"]}
    training = _training_arguments(training_kwargs)
    return Experiment(dataset=dataset, model=config["model"], training=training, raw=config)


def _strict_message(err: Exception) -> str:
    """huggingface_hub's strict-dataclass errors wrap ours in a header line; keep the informative last line."""
    return str(err).strip().splitlines()[-1].strip().removeprefix("ValueError: ").removeprefix("TypeError: ")


def _training_arguments(kwargs: dict):
    import torch
    from transformers import TrainingArguments

    # Without a GPU, a multi-process launch (`accelerate launch --multi_gpu --num_processes N`) trains data-parallel
    # on the CPU only if the Trainer is told so; otherwise each process would train alone on all the data.
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs.setdefault("use_cpu", True)
        if not kwargs["use_cpu"]:
            raise ConfigError("training.use_cpu=false with several processes and no GPU: each process would train "
                              "alone on all the data; remove it or launch on GPUs")
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"training: {err}") from None
