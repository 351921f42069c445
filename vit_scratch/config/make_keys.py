"""Write keys.json, the snapshot of every config key (type, choices, default, help) the command line checks and lists.

    python -m vit_scratch.config.make_keys     (make keys)

Read from the real classes (`dataclasses.fields`, `typing.get_type_hints`, enum members), so a transformers upgrade
shows up as a diff of keys.json (tests/test_structure.py regenerates it and fails on any difference), never as a
silent change. The command line reads the snapshot with the standard library alone; this module imports
transformers, but only when it runs.
"""

import dataclasses
import enum
import inspect
import json
import re
import typing

from vit_scratch.config.schema import KEYS_FILE, _type_name


def enums_of(annotation) -> dict[str, type[enum.Enum]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {annotation.__name__: annotation}
    return {name: e for arg in typing.get_args(annotation) for name, e in enums_of(arg).items()}


def default_text(value) -> str:
    return repr(value.value if isinstance(value, enum.Enum) else value)


def key(annotation, default, help_text: str, enums: dict) -> dict:
    found = enums_of(annotation)
    enums.update(found)
    choices = [m.value for e in found.values() for m in e]
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) is typing.Literal:
            choices += list(typing.get_args(arg))
    entry = {"type": _type_name(annotation), "default": default_text(default), "help": " ".join(help_text.split())}
    return {**entry, "choices": choices} if choices else entry


def dataclass_keys(cls, enums: dict, init_only: bool = False) -> dict:
    hints = typing.get_type_hints(cls)
    keys = {}
    for f in dataclasses.fields(cls):
        if init_only and not f.init:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys[f.name] = dataclass_keys(hints[f.name], enums)
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        keys[f.name] = key(hints[f.name], default, f.metadata.get("help", ""), enums)
    return keys


def model_keys(cls, enums: dict) -> dict:
    """The fields ViTScratchConfig declares itself (not PreTrainedConfig's), helped by its docstring's `name: text`."""
    hints = cls.__annotations__  # its own, real types (get_type_hints would also resolve the base's torch hints)
    docs = dict(re.findall(r"^\s*(\w+): (.+)$", inspect.getdoc(cls), re.M))
    return {name: key(hints[name], getattr(cls, name), docs.get(name, ""), enums) for name in hints
            if not name.startswith("_") and name != "model_type"}


def generate() -> dict:
    from modeling_vit_scratch.configuration_vit_scratch import ViTScratchConfig
    from vit_scratch.config.schema import DataArguments
    from vit_scratch.training.arguments import ViTScratchTrainingArguments

    enums = {}
    sections = {"dataset": dataclass_keys(DataArguments, enums), "model": model_keys(ViTScratchConfig, enums),
                "training": dataclass_keys(ViTScratchTrainingArguments, enums, init_only=True)}
    return {"enums": {name: {m.name: m.value for m in e} for name, e in sorted(enums.items())},
            "sections": sections}


def render(snapshot: dict) -> str:
    return json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    KEYS_FILE.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {KEYS_FILE}")
