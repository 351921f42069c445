"""Experiment configuration: the `dataset` section's dataclasses, and JSON/INI/CLI -> validated experiment.

A config file has three sections that map 1:1 onto code:
  dataset  -> `DataArguments` (with `augmentation` -> `AugmentArguments`)
  model    -> `ViTScratchConfig` fields
  training -> `ViTScratchTrainingArguments` fields (transformers' `TrainingArguments` + ema_decay, ema_warmup)

Every key is checked against its field's annotation (`_type_ok`), then against one table of range rules (`RANGES`).
Names, types, choices, defaults and help of all three sections come from keys.json, a snapshot of the real classes
(`make keys`), so the checks and `--help` need no torch or transformers. What needs the real classes (the model's
cross-field rules, TrainingArguments' own) is checked by `build_experiment`, still before any data is loaded. This
module imports only the standard library at load time.
"""

import copy
import dataclasses
import difflib
import enum
import functools
import importlib.util
import json
import math
import os
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vit_scratch.config.ini import read_ini
from vit_scratch.errors import ConfigError

SECTIONS = ["dataset", "model", "training"]
EXPERIMENT_FILE = "experiment.json"  # a run's config sections as given (overrides applied), beside its model
KEYS_FILE = Path(__file__).with_name("keys.json")  # every key's type, choices, default and help (make keys)


@dataclass
class AugmentArguments:
    """Batch augmentation on the training device (`dataset.augmentation.*`); evaluation sees none of it."""

    random_crop_padding: int = field(default=4, metadata={"help": "pad each side by this many pixels (reflect), crop "
                                                           "back at random; 0 = off"})
    horizontal_flip: bool = field(default=True, metadata={"help": "flip left-right with probability 0.5"})
    policy: Literal["none", "randaugment", "trivialaugment", "autoaugment"] | None = field(default=None, metadata={
        "help": "'randaugment' (torchvision's RandAugment), 'trivialaugment' (TrivialAugmentWide), 'autoaugment' "
                "(AutoAugment's CIFAR-10 policy) or 'none'; every image draws its own ops. null: 'randaugment' when "
                "randaugment_num_ops > 0, else 'none' (configs written before `policy`)"})
    randaugment_num_ops: int | None = field(default=None, metadata={
        "help": "RandAugment: ops applied in turn to each image; null = 2 (torchvision)"})
    randaugment_magnitude: int = field(default=9, metadata={
        "help": "RandAugment magnitude: bin 0..30 of torchvision's 31 (9 = its default)"})
    mixup_alpha: float = field(default=0.0, metadata={
        "help": "Beta(alpha, alpha) mixup of pairs of images and their labels; 0 = off"})
    cutmix_alpha: float = field(default=0.0, metadata={
        "help": "Beta(alpha, alpha) cutmix; with mixup too, each batch picks one at random; 0 = off"})
    mix_prob: float = field(default=1.0, metadata={
        "help": "probability that a batch is mixed at all (when mixup or cutmix is on)"})
    random_erasing_prob: float = field(default=0.0, metadata={
        "help": "probability of erasing one random rectangle per image; 0 = off"})

    def __post_init__(self):
        _validate_fields(self, "dataset.augmentation.")
        p, ops = "dataset.augmentation.", self.randaugment_num_ops
        if self.policy is None:  # resolved here, so the rest of the code sees one policy
            self.policy = "randaugment" if ops else "none"
        if self.policy == "randaugment":
            _check(ops is None or ops > 0, p + "randaugment_num_ops", ops,
                   "must be >= 1 with policy 'randaugment' (policy 'none' turns it off)")
            self.randaugment_num_ops = 2 if ops is None else ops
        else:
            _check(not ops, p + "randaugment_num_ops", ops, f"applies to policy 'randaugment' only, not "
                   f"{self.policy!r}")
            self.randaugment_num_ops = 0


@dataclass
class DataArguments:
    """Where the images come from and how they are split (`dataset.*`)."""

    name: str = field(default="uoft-cs/cifar10", metadata={
        "help": "A Hub dataset id, or a local path: a folder in the Hub layout (parquet/arrow files), a `save_to_disk` "
                "folder, an image folder (CLASS/*.png), a `cifar-10-python.tar.gz` archive or its "
                "`cifar-10-batches-py/`."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of `name`"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "datasets' cache folder (decoded uint8 arrays are cached there too)"})
    train_split: str = field(default="train", metadata={
        "help": "the split to train on (and to hold the validation images out of)"})
    test_split: str | None = field(default="test", metadata={
        "help": "evaluated once at the end; None = no test evaluation"})
    image_column: str | None = field(default=None, metadata={"help": "None: the first of `img`, `image` that exists"})
    label_column: str | None = field(default=None, metadata={
        "help": "None: the first of `label`, `labels` that exists"})
    validation_size: int = field(default=5000, metadata={
        "help": "images held out of the train split for evaluation during training; 0 = none"})
    validation_seed: int = field(default=0, metadata={
        "help": "seed of that hold-out (independent of the training seed, so runs compare)"})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "keep only the first N training images (after the hold-out)"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "keep only the first N validation images (test: max_test_samples)"})
    max_test_samples: int | None = field(default=None, metadata={
        "help": "keep only the first N test images (the card and results say how many)"})
    storage: Literal["auto", "device", "host", "stream"] = field(default="auto", metadata={
        "help": "where the decoded images live while training: \"device\" (all on the training device), \"host\" "
                "(decoded in host memory, each batch copied to the device one ahead), \"stream\" (nothing held: "
                "DataLoader workers decode each batch from the source; the training section's dataloader_num_workers "
                "of them) or \"auto\" (device if it fits, else host, else stream; the log says which and why)"})
    augmentation: AugmentArguments = field(default_factory=AugmentArguments)

    def __post_init__(self):
        if isinstance(self.augmentation, dict):
            self.augmentation = AugmentArguments(**self.augmentation)
        _validate_fields(self, "dataset.")


def _file_or_object(value) -> bool:
    """A JSON object, or a path to a file that exists (accelerator_config, deepspeed)."""
    if not isinstance(value, str):
        return True
    try:
        return Path(value).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the filesystem
        return False


# Ranges the annotations cannot say, for every section (the model's are ViTScratchConfig.validate_architecture's).
MAX_LABELS = 1_000_000  # far above any dataset's classes (ImageNet-21k: 21,841)
_PROBABILITY = (lambda v: 0 <= v <= 1, "must be a probability in [0, 1]")
_AT_LEAST_0 = (lambda v: v >= 0, "must be an integer >= 0")
_POSITIVE_OR_NULL = (lambda v: v is None or v > 0, "must be a positive integer or null")
RANGES = {
    "dataset.name": (lambda v: bool(v), "must be a Hub dataset id or a local path"),
    "model.pretrained": (lambda v: bool(v), "must be a model folder or a Hub id (or null)"),
    # transformers builds an id2label entry per label at once: 2**63 labels would exhaust the memory
    "model.num_labels": (lambda v: 1 <= v <= MAX_LABELS, f"must be a number of classes in 1..{MAX_LABELS:,}"),
    "dataset.validation_size": _AT_LEAST_0,
    "dataset.validation_seed": _AT_LEAST_0,
    "dataset.max_train_samples": _POSITIVE_OR_NULL,
    "dataset.max_eval_samples": _POSITIVE_OR_NULL,
    "dataset.max_test_samples": _POSITIVE_OR_NULL,
    "dataset.augmentation.random_crop_padding": _AT_LEAST_0,
    "dataset.augmentation.randaugment_num_ops": (lambda v: v is None or v >= 0, "must be an integer >= 0"),
    "dataset.augmentation.randaugment_magnitude": (lambda v: 0 <= v <= 30,
                                                   "must be a magnitude bin in 0..30 (torchvision's 31 bins)"),
    "dataset.augmentation.mixup_alpha": (lambda v: v >= 0, "must be a number >= 0 (0 turns it off)"),
    "dataset.augmentation.cutmix_alpha": (lambda v: v >= 0, "must be a number >= 0 (0 turns it off)"),
    "dataset.augmentation.mix_prob": _PROBABILITY,
    "dataset.augmentation.random_erasing_prob": _PROBABILITY,
    "training.learning_rate": (lambda v: v > 0, "must be > 0"),
    "training.num_train_epochs": (lambda v: v > 0, "must be > 0"),
    "training.per_device_train_batch_size": (lambda v: v > 0, "must be a positive integer"),
    "training.per_device_eval_batch_size": (lambda v: v > 0, "must be a positive integer"),
    "training.gradient_accumulation_steps": (lambda v: v > 0, "must be a positive integer"),
    "training.weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "training.label_smoothing_factor": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "training.max_grad_norm": (lambda v: v >= 0, "must be >= 0 (0 turns clipping off)"),
    "training.warmup_steps": (lambda v: v >= 0, "must be >= 0 (a fraction of the run when < 1)"),
    # set_seed seeds numpy too, which takes 0..2**32-1 only
    "training.seed": (lambda v: 0 <= v < 2**32, "must be an integer in 0..4,294,967,295 (numpy's seed range)"),
    "training.data_seed": (lambda v: 0 <= v < 2**32, "must be an integer in 0..4,294,967,295 (numpy's seed range)"),
    "training.report_to": (lambda v: v is not None, "must be a backend name, a list of them, 'all' or 'none'"),
    "training.accelerator_config": (_file_or_object, "must be a JSON object or the path of a JSON file that exists"),
    "training.deepspeed": (_file_or_object, "must be a JSON object or the path of a DeepSpeed config file that "
                                            "exists"),
    "training.ema_decay": (lambda v: 0 < v < 1, "must be in (0, 1), e.g. 0.999, or null (off)"),
    "training.train_sampling_strategy": (lambda v: v in ("random", "sequential"),
                                         "must be 'random' or 'sequential' (images have no length to group by)"),
}

NULL_REFUSED = {"training.report_to"}  # the annotation allows null, transformers then fails on it
# Integers beyond a C int overflow inside transformers and torch (ddp_timeout, ...); the seeds' range is numpy's.
INT_LIMIT = 2**31 - 1
SEEDS = ("training.seed", "training.data_seed")

# Keys refused in a config file, with the reason.
FORBIDDEN_KEYS = {
    "training.hub_token": "a token never goes into a config file; use HF_TOKEN or `hf auth login`",
    "training.dataloader_drop_last": "training always drops its last partial batch (every step the same shapes) and "
                                     "evaluation never does (every image counts); see trainer.py",
    "training.enable_jit_checkpoint": "SIGTERM already saves a checkpoint at the end of the current step and stops "
                                      "(synchronised across processes, resumable exactly); see trainer.py",
    # TrainingArguments fields that only example scripts read: the run would ignore them without a word.
    "training.do_train": "train.py always trains; to evaluate a saved model use validate.py",
    "training.do_eval": "validation runs as training.eval_strategy says; to evaluate a saved model use validate.py",
    "training.do_predict": "the test split (dataset.test_split) is evaluated after training; to classify images "
                           "use predict.py",
    "training.resume_from_checkpoint": "use `train.py --resume`: it continues from the newest complete checkpoint "
                                       "in training.output_dir",
    "training.local_rank": "set by the launcher (accelerate launch), never by a config",
    "training.dataloader_persistent_workers": "the decode workers of dataset.storage 'stream' start afresh each epoch, "
                                              "so that a resumed run draws the same random numbers as an "
                                              "uninterrupted one",
}

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

# `training.report_to` backends installed by this project's extras (`pip install -e ".[tensorboard]"`).
LOGGING_EXTRAS = ("tensorboard", "trackio")
# How to install the other backends, where it is not `pip install NAME` (transformers' is_*_available checks).
BACKEND_INSTALL = {"azure_ml": "pip install azureml-core",
                   "flyte": "pip install flytekit flytekitplugins-deck-standard",
                   "kubeflow": "run inside a Kubeflow trainer (KUBEFLOW_TRAINER_SERVER_URL set)"}

# `model` keys that PreTrainedConfig takes as arguments rather than as fields of ViTScratchConfig.
MODEL_EXTRA_KEYS = {
    "attn_implementation": (Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None,
                            "attention kernel; null = transformers' default (sdpa)"),
    "num_labels": (int | None, "optional: checked against the number of classes in the data"),
    "pretrained": (str | None, "start from these weights: a train.py output folder or Hub id, or a transformers ViT "
                               "(architecture from the checkpoint; a new head when the classes differ)"),
}


@dataclass
class Experiment:
    """A validated experiment: what `train.py` builds everything from."""

    dataset: DataArguments
    # Imported lazily; id2label comes from the data (run.with_labels). None with model.pretrained: the architecture
    # is the checkpoint's, known once it is read (pretrained.load_pretrained checks the merged config).
    model: "ViTScratchConfig | None"  # noqa: F821
    training: "TrainingArguments"  # noqa: F821 (imported lazily: it initialises distributed state)
    raw: dict  # the merged sections as given, for the model card and all_results.json

    @property
    def num_labels(self) -> int | None:
        """`model.num_labels` when the config gives it (checked against the data), else None."""
        return self.raw["model"].get("num_labels")

    @property
    def pretrained(self) -> str | None:
        """`model.pretrained`: the weights to start from (None: a fresh initialisation)."""
        return self.raw["model"].get("pretrained")


# ----------------------------------------------------------------------------------------------- validation


def _check(ok: bool, key: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _closest(key: str, choices) -> str:
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _type_ok(value, annotation) -> bool:
    """Does a JSON value fit a field annotation (a type, a union, an Enum or a Literal)? JSON ints pass for floats."""
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
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, set) and typing.get_args(annotation):  # list[str]: every element a str
        element = typing.get_args(annotation)[0]
        return isinstance(value, list) and all(_type_ok(item, element) for item in value)
    if origin is dict and len(typing.get_args(annotation)) == 2:
        key_type, value_type = typing.get_args(annotation)
        return isinstance(value, dict) and all(_type_ok(k, key_type) and _type_ok(v, value_type)
                                               for k, v in value.items())
    if origin is not None:
        annotation = origin
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in [m.value for m in annotation] or isinstance(value, annotation)  # a list: a JSON list may come
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _choices(annotation) -> list:
    """The values an Enum/Literal annotation (or a union holding them) allows; [] for other types."""
    choices = []
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            choices += [m.value for m in arg]
        elif typing.get_origin(arg) is Literal:
            choices += list(typing.get_args(arg))
    return choices or (list(typing.get_args(annotation)) if typing.get_origin(annotation) is Literal else [])


def _type_name(annotation) -> str:
    """An annotation as source would write it: `int | None`, `Literal['eager', 'sdpa'] | None`, `dict[str, Any]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is typing.Any:
        return "Any"
    if origin is not None:
        return f"{_type_name(origin)}[{', '.join(map(_type_name, args))}]"
    return getattr(annotation, "__name__", None) or str(annotation)


def _check_value(key: str, value, annotation) -> None:
    """The one check of a value: its annotation (naming the choices, and the closest one), then its range rule."""
    if not _type_ok(value, annotation):
        choices = _choices(annotation)
        if choices:
            hint = _closest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            raise ConfigError(f"{key}={value!r} is invalid: expected one of {', '.join(map(str, choices))}{hint}")
        raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(annotation)}")
    _check(_finite(value), key, value, "NaN and inf are not numbers a run can use (anywhere in the value)")
    _check(not _holds_nul(value), key, value, "a NUL byte cannot be part of a name or path")
    if key in RANGES and (value is not None or key in NULL_REFUSED):
        rule, allowed = RANGES[key]
        _check(rule(value), key, value, allowed)
    if isinstance(value, int) and not isinstance(value, bool) and key not in SEEDS:
        _check(abs(value) <= INT_LIMIT, key, value, f"must be an integer within +-{INT_LIMIT:,}")


def _finite(value) -> bool:
    """No NaN or +-inf in the value, nested lists and objects included."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    if isinstance(value, dict):
        return any(map(_holds_nul, [*value.keys(), *value.values()]))
    return False


def _validate_fields(obj, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        if not dataclasses.is_dataclass(f.type):  # a nested section validates itself
            _check_value(prefix + f.name, getattr(obj, f.name), f.type)


@dataclass
class KeyDoc:
    """One config key as keys.json records it: what `--help` prints and what values are checked against."""

    annotation: typing.Any  # the type, rebuilt from its text (enums from their members; another class: Any)
    type_text: str  # as the class declares it, e.g. "int | None"
    default: str  # repr of the default, e.g. "'uoft-cs/cifar10'"
    help: str  # the field's `metadata["help"]` (ViTScratchConfig: its docstring's `name: text` line)


class _AnnotationNamespace(dict):
    """Names a type text may use: builtins, typing's, the snapshot's enums; any other name (a class the snapshot
    does not record) stands for typing.Any, so its values pass the fast check and are left to the class itself."""

    def __init__(self, enums: dict):
        super().__init__({"Any": typing.Any, "Literal": Literal, **enums})

    def __missing__(self, name):
        import builtins

        return getattr(builtins, name, typing.Any)


def _key_docs(keys: dict, namespace: _AnnotationNamespace) -> dict:
    return {name: _key_docs(entry, namespace) if "type" not in entry else
            KeyDoc(eval(entry["type"], {}, namespace), entry["type"], entry["default"], entry["help"])
            for name, entry in keys.items()}


@functools.cache
def section_docs() -> dict:
    """Every accepted key of every section as a KeyDoc, from keys.json (`make keys` writes it from the classes)."""
    snapshot = json.loads(KEYS_FILE.read_text(encoding="utf-8"))
    namespace = _AnnotationNamespace({name: enum.Enum(name, members) for name, members in snapshot["enums"].items()})
    docs = _key_docs(snapshot["sections"], namespace)
    docs["model"].update({name: KeyDoc(annotation, _type_name(annotation), "None", help_text)
                          for name, (annotation, help_text) in MODEL_EXTRA_KEYS.items()})
    for name, value in TRAINING_DEFAULTS.items():
        docs["training"][name] = dataclasses.replace(docs["training"][name], default=f"{value!r} (TrainingArguments: "
                                                     f"{docs['training'][name].default})")
    return docs


def describe_keys(sections: tuple[str, ...] = tuple(SECTIONS)) -> str:
    """The `--help` list of every config key of `sections`: its type, default and meaning, from keys.json."""
    lines = ["config keys (in the config file's sections, or on the command line as --SECTION.KEY VALUE):"]

    def add(prefix: str, docs: dict):
        for name, doc in docs.items():
            if isinstance(doc, dict):
                add(f"{prefix}{name}.", doc)
            elif f"{prefix}{name}" not in FORBIDDEN_KEYS:
                lines.append(f"  {prefix}{name}  ({doc.type_text}, default {doc.default})")
                lines.extend(textwrap.wrap(doc.help, width=116, initial_indent=" " * 6, subsequent_indent=" " * 6))
    titles = {"dataset": "DataArguments, vit_scratch/config/schema.py",
              "model": "ViTScratchConfig, configuration_vit_scratch.py",
              "training": "transformers.TrainingArguments + ema_decay, ema_warmup; this project's defaults shown"}
    for section in sections:
        lines += ["", f"{section} ({titles[section]}):"]
        add(f"{section}.", section_docs()[section])
    refused = [f"  {key}: {reason}" for key, reason in FORBIDDEN_KEYS.items() if key.split(".")[0] in sections]
    lines += ["", "refused keys:", *refused] if refused else []
    return "\n".join(lines)


def _check_names(section: str, values, known) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a JSON object of keys, got {type(values).__name__}")
    for key, value in values.items():
        full = f"{section}.{key}"
        if full in FORBIDDEN_KEYS:
            raise ConfigError(f"{full} is not allowed: {FORBIDDEN_KEYS[full]}")
        if key not in known:
            hint = _closest(key, known) or (
                f" (allowed: {', '.join(sorted(known))})" if len(known) <= 30 else " (see docs/configuration.md)")
            raise ConfigError(f"unknown key {full}{hint}")
        if isinstance(known, dict) and isinstance(known[key], dict):  # a nested section (dataset.augmentation)
            _check_names(full, value, known[key])


def check_keys(config: dict) -> dict:
    """What can be checked without torch/transformers: sections, key names, forbidden keys, every value against its
    field's type (from keys.json) and range rule. Returns the three sections (deep copies)."""
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section {section!r}{_closest(section, SECTIONS)} (allowed: {', '.join(SECTIONS)})")
    config = {section: copy.deepcopy(config.get(section, {})) for section in SECTIONS}
    docs = section_docs()
    for section in SECTIONS:
        _check_names(section, config[section], docs[section])
    storage = DataArguments(**config["dataset"]).storage  # checks itself
    workers = config["training"].get("dataloader_num_workers")
    if storage in ("device", "host") and workers:
        raise ConfigError(f"training.dataloader_num_workers={workers!r} is invalid with dataset.storage={storage!r}: "
                          "workers decode images for storage 'stream' (or 'auto' when it picks stream); the held "
                          "images need none")
    for section in ("model", "training"):
        for key, value in config[section].items():
            _check_value(f"{section}.{key}", value, docs[section][key].annotation)
    return config


def build_experiment(config: dict, seed: int | None = None) -> Experiment:
    """Validate every section and build the argument objects. Raises ConfigError before any data is touched."""
    config = check_keys(config)
    if seed is not None:
        config["training"]["seed"] = seed
    _check_compile_off(config["training"])
    training = _training_arguments({**TRAINING_DEFAULTS, **config["training"]})
    dataset = DataArguments(**config["dataset"])
    if training.eval_strategy != "no" and dataset.validation_size == 0:
        raise ConfigError("dataset.validation_size=0 leaves nothing to evaluate on: set training.eval_strategy='no' "
                          "and training.load_best_model_at_end=false, or hold out a validation split")
    check_integrations(training)
    return Experiment(dataset=dataset, model=_model_config(config["model"]), training=training, raw=config)


def _check_compile_off(training: dict) -> None:
    """`torch_compile: false` beside a compile mode or backend: TrainingArguments would turn compilation back on
    (a mode or backend alone enables it), so the run would compile against the config's word."""
    if training.get("torch_compile") is False:
        for key in ("torch_compile_mode", "torch_compile_backend"):
            if training.get(key) is not None:
                raise ConfigError(f"training.torch_compile=false with training.{key}={training[key]!r}: transformers "
                                  f"compiles whenever a {key.rsplit('_', 1)[1]} is set; to train without compiling, "
                                  f"also set training.{key} null")


def check_integrations(args) -> None:
    """What would otherwise fail only after the data is loaded (a `report_to` backend that is not installed) or after
    hours of training (a `push_to_hub` that cannot reach the Hub, or has no token)."""
    from transformers.integrations import integration_utils

    known = integration_utils.INTEGRATION_TO_CALLBACK
    installed = set(integration_utils.get_available_reporting_integrations())
    installed |= {"flyte"} if integration_utils.is_flytekit_available() else set()
    for name in args.report_to or []:
        if name not in known:
            raise ConfigError(f"training.report_to={name!r} is invalid{_closest(name, known)} (allowed: "
                              f"{', '.join(sorted(known))}, all, none)")
        if name not in installed:
            how = f'pip install -e ".[{name}]"' if name in LOGGING_EXTRAS else \
                BACKEND_INSTALL.get(name, f"pip install {name}")
            raise ConfigError(f"training.report_to={name!r}: {name} is not installed; `{how}`, or drop it from "
                              "training.report_to")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        try:  # every process asks, so that all of them stop here together
            HfApi().whoami()
        except Exception as err:  # no token, offline mode, no network, a refused token: all end the same way
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"training.push_to_hub=true, but the Hub cannot be used: {reason} (log in with "
                              "`hf auth login` or set HF_TOKEN; HF_HUB_OFFLINE=1 forbids any push)") from None


def _model_config(values: dict):
    if values.get("pretrained") is not None:
        return None  # the checkpoint's architecture, merged with these keys by pretrained.load_pretrained
    # num_labels null means "from the data", as leaving it out does
    values = {key: value for key, value in values.items()
              if key != "pretrained" and not (key == "num_labels" and value is None)}
    return model_config("model", **values)  # every model rule, checked now rather than after loading data


def model_config(label: str, **values):
    """`ViTScratchConfig(**values)`, every model rule checked (validate_architecture); a bad value raises
    ConfigError("LABEL: what is wrong")."""
    from huggingface_hub.errors import StrictDataclassError

    from modeling_vit_scratch.configuration_vit_scratch import ViTScratchConfig

    try:
        return ViTScratchConfig(**values)
    except (ValueError, StrictDataclassError) as err:
        # huggingface_hub's strict-dataclass errors wrap ours in a header line; keep the informative last line
        message = str(err).strip().splitlines()[-1].strip().removeprefix("ValueError: ").removeprefix("TypeError: ")
        raise ConfigError(f"{label}: {message}") from None


def _training_arguments(kwargs: dict):
    import torch

    from vit_scratch.training.arguments import ViTScratchTrainingArguments

    # Without a GPU, a multi-process launch (`accelerate launch --multi_gpu --num_processes N`) trains data-parallel
    # on the CPU only if the Trainer is told so; otherwise each process would train alone on all the data.
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs.setdefault("use_cpu", True)
        if not kwargs["use_cpu"]:
            raise ConfigError("training.use_cpu=false with several processes and no GPU: each process would train "
                              "alone on all the data; remove it or launch on GPUs")
    if kwargs.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"training.deepspeed={kwargs['deepspeed']!r} is invalid: deepspeed is not installed "
                          "(`pip install deepspeed`, or remove training.deepspeed)")
    try:
        return ViTScratchTrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"training: {err}") from None


# ----------------------------------------------------------------------------------------------- files, overrides


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
