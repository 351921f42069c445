"""Write keys.json, the snapshot of every config key (type, choices, default, help) the command line checks and lists,
and the configuration reference in docs/configuration.md rendered from it.

    python -m vit_scratch.config.make_keys           (make keys: keys.json from the classes, then the reference)
    python -m vit_scratch.config.make_keys --docs    (make docs: the reference from keys.json alone, no transformers)

Read from the real classes (`dataclasses.fields`, `typing.get_type_hints`, enum members), so a transformers upgrade
shows up as a diff of keys.json (tests/test_structure.py regenerates it and fails on any difference), never as a
silent change. The command line reads the snapshot with the standard library alone; this module imports
transformers, but only when it runs.
"""

import ast
import dataclasses
import enum
import inspect
import json
import re
import sys
import typing
from pathlib import Path

from vit_scratch.config.schema import FORBIDDEN_KEYS, KEYS_FILE, TRAINING_DEFAULTS, _type_name, section_docs

DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# The generated part of DOCS_FILE lies between these lines; the prose around it is written by hand.
DOCS_START = "<!-- keys:start: generated from vit_scratch/config/keys.json by `make docs`: edit the classes -->"
DOCS_END = "<!-- keys:end -->"
SECTION_TITLES = {
    "dataset": "`dataset` (`DataArguments`, vit_scratch/config/schema.py)",
    "dataset.augmentation": "`dataset.augmentation` (`AugmentArguments`, vit_scratch/config/schema.py)",
    "model": "`model` (`ViTScratchConfig`, modeling_vit_scratch/configuration_vit_scratch.py)",
    "training": "`training` (`transformers.TrainingArguments` + `ema_decay`, `ema_warmup`)",
}


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


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped everywhere, `*` and `<` outside code spans (no emphasis, no
    HTML tags)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("*", "\\*").replace("<", "&lt;") for i, part in enumerate(parts))


def _json_text(python_repr: str) -> str:
    """A default as a config file writes it (`None` -> `null`, `'epoch'` -> `"epoch"`), when it is a literal."""
    try:
        return json.dumps(ast.literal_eval(python_repr), ensure_ascii=False)
    except (ValueError, SyntaxError, TypeError):
        return python_repr


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def reference() -> str:
    """The reference block of docs/configuration.md, markers included: one table per section, every key with its
    type, default (this project's where it differs from transformers') and meaning, then the refused keys."""
    sections = json.loads(KEYS_FILE.read_text(encoding="utf-8"))["sections"]
    docs = section_docs()
    lines = [DOCS_START, "", "## Every key", "",
             "Defaults are written as in a JSON config file. Set any key in the file's section or on the command line "
             "as `--SECTION.KEY VALUE`.", ""]

    def table(name: str, keys: dict, raw: dict):
        lines.extend([f"### {SECTION_TITLES[name]}", "", "| key | type | default | meaning |", "|---|---|---|---|"])
        for key, doc in keys.items():
            if isinstance(doc, dict) or f"{name}.{key}" in FORBIDDEN_KEYS:
                continue
            default = _code(_json_text(raw[key]["default"] if key in raw else doc.default))
            meaning = doc.help
            if name == "training" and key in TRAINING_DEFAULTS:
                default = (f"{_code(json.dumps(TRAINING_DEFAULTS[key]))} (transformers: "
                           f"{_code(_json_text(raw[key]['default']))})")
            choices = raw.get(key, {}).get("choices")
            if choices and not doc.type_text.startswith("Literal"):
                meaning += f" One of: {', '.join(_code(str(c)) for c in choices)}."
            lines.append(f"| `{key}` | {_cell(_code(doc.type_text))} | {_cell(default)} | {_cell(meaning)} |")
        lines.append("")

    table("dataset", docs["dataset"], sections["dataset"])
    table("dataset.augmentation", docs["dataset"]["augmentation"], sections["dataset"]["augmentation"])
    table("model", docs["model"], sections["model"])
    table("training", docs["training"], sections["training"])
    lines.extend(["### Refused keys", "", "These fields exist in the classes above, but a config naming them stops "
                  "with one `error:` line:", "", "| key | why |", "|---|---|"])
    lines.extend(f"| `{key}` | {_cell(reason)} |" for key, reason in FORBIDDEN_KEYS.items())
    lines.extend(["", DOCS_END])
    return "\n".join(lines)


def write_reference() -> None:
    """Replace the generated block of docs/configuration.md (nothing else of the file changes)."""
    text = DOCS_FILE.read_text(encoding="utf-8")
    if DOCS_START not in text or DOCS_END not in text:
        print(f"error: {DOCS_FILE} lacks the lines that bound its reference: {DOCS_START} ... {DOCS_END}",
              file=sys.stderr)
        sys.exit(2)
    start, end = text.index(DOCS_START), text.index(DOCS_END) + len(DOCS_END)
    DOCS_FILE.write_text(text[:start] + reference() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--docs" not in sys.argv[1:]:
        KEYS_FILE.write_text(render(generate()), encoding="utf-8")
        print(f"wrote {KEYS_FILE}")
    write_reference()
    print(f"wrote {DOCS_FILE} (the reference part)")
