"""The older project's INI config (`python run.py [-s SEED] config.ini`) -> our three sections.

Its sections and keys, and where each goes (also printed by train.py and documented in docs/configuration.md):

    [dataset]    dir          -> dataset.name when it holds the CIFAR-10 python archive, else dataset.cache_dir
                 name         -> dataset.name = "uoft-cs/cifar10" (CIFAR10 was the only accepted value)
                 in_channels  -> model.num_channels
                 image_size   -> model.image_size
                 num_classes  -> model.num_labels (checked against the data)
    [dataloader] batch_size   -> training.per_device_train_batch_size and per_device_eval_batch_size
                 shuffle      -> (the Trainer always shuffles training data; false is refused)
    [model]      patch_size   -> model.patch_size
                 embed_dim    -> model.hidden_size
                 num_blocks   -> model.num_hidden_layers
                 heads        -> model.num_attention_heads
                 hidden_dim   -> model.intermediate_size
                 dropout      -> model.hidden_dropout_prob
    [learning]   epochs       -> training.num_train_epochs
                 learning_rate-> training.learning_rate
"""

import configparser
import json
from pathlib import Path

from vit_scratch.errors import ConfigError

CIFAR_ARCHIVES = ("cifar-10-python.tar.gz", "cifar-10-batches-py")
DATASET_NAMES = {"cifar10": "uoft-cs/cifar10"}

# (INI section, INI key) -> list of (our section, our key)
INI_MAPPING = {
    ("dataset", "in_channels"): [("model", "num_channels")],
    ("dataset", "image_size"): [("model", "image_size")],
    ("dataset", "num_classes"): [("model", "num_labels")],
    ("dataloader", "batch_size"): [("training", "per_device_train_batch_size"),
                                   ("training", "per_device_eval_batch_size")],
    ("model", "patch_size"): [("model", "patch_size")],
    ("model", "embed_dim"): [("model", "hidden_size")],
    ("model", "num_blocks"): [("model", "num_hidden_layers")],
    ("model", "heads"): [("model", "num_attention_heads")],
    ("model", "hidden_dim"): [("model", "intermediate_size")],
    ("model", "dropout"): [("model", "hidden_dropout_prob")],
    ("learning", "epochs"): [("training", "num_train_epochs")],
    ("learning", "learning_rate"): [("training", "learning_rate")],
}
HANDLED_APART = {("dataset", "dir"), ("dataset", "name"), ("dataloader", "shuffle")}


def _value(text: str):
    """INI values are text: numbers and booleans become JSON values, the rest stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def read_ini(path: Path) -> tuple[dict, list[str]]:
    """Read an older-project INI (inline `;`/`#` comments allowed). Returns our sections and the mapping lines."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(path.read_text(), source=str(path))
    except configparser.Error as err:
        raise ConfigError(f"{path}: malformed INI: {err}") from None

    known = {key for key in INI_MAPPING} | HANDLED_APART
    config: dict = {"dataset": {}, "model": {}, "training": {}}
    lines = []
    for section in parser.sections():
        for key, text in parser.items(section):
            if (section, key) not in known:
                choices = sorted(f"[{s}] {k}" for s, k in known)
                raise ConfigError(f"{path}: unknown INI key [{section}] {key} (known: {', '.join(choices)})")
            value = _value(text)
            if (section, key) in INI_MAPPING:
                for ours_section, ours_key in INI_MAPPING[(section, key)]:
                    config[ours_section][ours_key] = value
                    lines.append(f"[{section}] {key} = {value!r} -> {ours_section}.{ours_key}")

    if parser.has_option("dataloader", "shuffle"):
        if _value(parser.get("dataloader", "shuffle")) is not True:
            raise ConfigError(f"{path}: [dataloader] shuffle must be true: the Trainer always shuffles training data")
        lines.append("[dataloader] shuffle = True -> (the Trainer shuffles training data)")

    name = parser.get("dataset", "name", fallback="CIFAR10")
    if name.lower() not in DATASET_NAMES:
        raise ConfigError(f"{path}: [dataset] name={name!r} is not supported (the older project accepted: CIFAR10)")
    config["dataset"]["name"] = DATASET_NAMES[name.lower()]
    data_dir = parser.get("dataset", "dir", fallback=None)
    if data_dir is not None:
        folder = Path(data_dir)  # relative to the working directory, as `run.py` read it
        if any((folder / archive).exists() for archive in CIFAR_ARCHIVES):
            config["dataset"]["name"] = str(folder)  # the CIFAR-10 python archive the older project downloaded
            lines.append(f"[dataset] dir = {data_dir!r} (holds the CIFAR-10 archive) -> dataset.name = {str(folder)!r}")
        else:
            config["dataset"]["cache_dir"] = str(folder)
            lines.append(f"[dataset] dir = {data_dir!r} -> dataset.cache_dir = {str(folder)!r}")
    lines.append(f"[dataset] name = {name!r} -> dataset.name = {config['dataset']['name']!r}")
    return config, lines
