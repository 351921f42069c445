"""The shape of the package: what the model needs, which way imports go, and what train.py loads before it has
checked a config."""

import ast
import dataclasses
import difflib
import re
import subprocess
import sys
import typing

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
from vit_scratch.config.schema import (
    FORBIDDEN_KEYS,
    MODEL_EXTRA_KEYS,
    TRAINING_DEFAULTS,
    _choices,
    _type_ok,
    describe_keys,
    section_docs,
)

from .helpers import REPO, subprocess_env, tiny_config

PACKAGES = (REPO / "modeling_vit_scratch", REPO / "vit_scratch")
TRAINING_ONLY = ("datasets", "accelerate", "evaluate", "matplotlib", "PIL", "pyarrow")


def test_the_model_needs_only_torch_and_transformers(tmp_path):
    block = re.search(r"^dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)
    assert sorted(re.findall(r'"([\w-]+)==', block)) == ["huggingface_hub", "safetensors", "torch", "transformers"]
    ViTScratchForImageClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    script = f"""
import sys
for name in {TRAINING_ONLY!r}:
    sys.modules[name] = None  # as if not installed: import fails, find_spec says absent
import torch
import modeling_vit_scratch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r})
assert model(torch.zeros(2, 3, 32, 32)).logits.shape == (2, 3)
assert not [m for m in sys.modules if m.startswith("vit_scratch")]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def imports_of(path) -> set[str]:
    """Every module of our package that `path` imports, at module level or inside functions."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if (REPO / (n.replace(".", "/") + ".py")).is_file()}
    return found


def imported_names(source: str, module: str) -> set[str]:
    """Every dotted name `source` (the text of `module`) imports: `import a.b` -> a.b; `from a import b` -> a and a.b
    (b may be a module); relative imports resolved; at module level or inside functions; also
    `importlib.import_module("a.b")` and `__import__("a.b")` with a literal name."""
    package = module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names |= {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return names


def imports_from_cli(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "vit_scratch.cli" or n.startswith("vit_scratch.cli."))


def test_no_module_outside_cli_imports_from_cli():
    """The command line stands on the package, never under it: no module of vit_scratch outside vit_scratch/cli/ (nor
    of modeling_vit_scratch) imports anything of cli/, in any form."""
    planted = {  # the detector itself: each of these forms is found
        "import vit_scratch.cli.args": "vit_scratch.data",
        "from vit_scratch.cli import args": "vit_scratch.data",
        "from vit_scratch import cli": "vit_scratch.data",
        "def f():\n    from ..cli.validate import main": "vit_scratch.training.run",
        "from .cli import args": "vit_scratch.__init__",
        "import importlib\nimportlib.import_module('vit_scratch.cli.args')": "vit_scratch.data",
    }
    for source, module in planted.items():
        assert imports_from_cli(imported_names(source, module)), source
    assert not imports_from_cli(imported_names("from vit_scratch import client, errors", "vit_scratch.data"))

    offenders = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if (REPO / "vit_scratch" / "cli") in path.parents:
                continue
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if found := imports_from_cli(imported_names(path.read_text(), module)):
                offenders[module] = found
    assert not offenders, f"modules outside vit_scratch/cli/ that import from it: {offenders}"


def test_no_import_cycle():
    graph = {".".join(p.relative_to(REPO).with_suffix("").parts): imports_of(p)
             for package in PACKAGES for p in package.rglob("*.py")}
    model_files = {"modeling_vit_scratch.configuration_vit_scratch", "modeling_vit_scratch.modeling_vit_scratch"}
    assert graph["modeling_vit_scratch.modeling_vit_scratch"] <= {"modeling_vit_scratch.configuration_vit_scratch"}
    assert not graph["modeling_vit_scratch.configuration_vit_scratch"]  # both are copied next to the weights
    for name in model_files | {"modeling_vit_scratch.convert"}:
        assert not {m for m in graph[name] if m.startswith("vit_scratch")}, name  # application -> model, never back
    assert not graph["vit_scratch.errors"]

    def visit(node, path):
        for nxt in graph.get(node, ()):
            assert nxt not in path, f"import cycle: {' -> '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])


def test_train_py_checks_a_config_without_torch_or_transformers():
    """--help and bad keys or values of every section are answered from the standard-library modules alone (no
    package __init__, no torch, no transformers)."""
    script = """
import sys, train
for override in (["--training.learnig_rate", "1e-3"], ["--dataset.augmentation.mix_prob", "2"],
                 ["--training.learning_rate", "-1"], ["--training.lr_scheduler_type", "cosin"],
                 ["--model.num_hidden_layers", "2.5"], ["--training.bf16", "yes"]):
    assert train.main(["--config", "configs/cifar10.json", *override]) == 2, override
heavy = [m for m in ("torch", "transformers", "datasets", "modeling_vit_scratch") if m in sys.modules]
assert not heavy, heavy
try:
    train.main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
assert "torch" not in sys.modules and "transformers" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr[-3000:]
    errors = result.stderr
    assert "unknown key training.learnig_rate; did you mean 'learning_rate'?" in errors
    assert "dataset.augmentation.mix_prob=2 is invalid: must be a probability in [0, 1]" in errors
    assert "training.learning_rate=-1 is invalid: must be > 0" in errors
    assert "training.lr_scheduler_type='cosin' is invalid: expected one of linear, cosine," in errors
    assert "model.num_hidden_layers=2.5 is invalid: expected int" in errors
    assert "training.bf16='yes' is invalid: expected bool" in errors
    for key in ("dataset.augmentation.policy  (Literal['none', 'randaugment', 'trivialaugment', 'autoaugment'] | "
                "None, default None)",
                "model.pretrained  (str | None, default None)", "training.lr_scheduler_type  (SchedulerType | str, "
                "default 'linear')", "training.eval_strategy  (IntervalStrategy | str, default 'epoch' "
                "(TrainingArguments: 'no'))", "training.do_train: train.py always trains"):
        assert key in result.stdout, key


def test_key_docs_read_from_source_match_the_classes():
    """The fast checks and --help read ViTScratchConfig's and TrainingArguments' fields from keys.json; they
    must be exactly the classes' fields, accept exactly the values the real annotations accept, name the same choices
    and state the real defaults (a transformers upgrade that changes them fails here)."""
    from vit_scratch.training.arguments import ViTScratchTrainingArguments

    docs = section_docs()
    real = {"model": {name: ViTScratchConfig.__annotations__[name] for name in ViTScratchConfig.__annotations__},
            "training": {f.name: f for f in dataclasses.fields(ViTScratchTrainingArguments) if f.init}}
    assert docs["model"].keys() == real["model"].keys() | MODEL_EXTRA_KEYS.keys()
    assert docs["training"].keys() == real["training"].keys()
    samples = [0, 3, 0.5, True, None, "x", "linear", "epoch", "adamw_torch", "every_save", "underflow_overflow", [],
               ["tensorboard"], {}, {"a": 1}]
    for name, field in real["training"].items():
        doc = docs["training"][name]
        if "Any" in str(doc.annotation):  # a class the source reader does not rebuild: left to the class itself
            continue
        assert _choices(doc.annotation) == _choices(field.type), name
        for value in samples:
            assert _type_ok(value, doc.annotation) == _type_ok(value, field.type), (name, value)
        if name not in TRAINING_DEFAULTS and field.default is not dataclasses.MISSING:
            try:
                written = ast.literal_eval(doc.default)
            except ValueError:  # a name, e.g. default_optim
                continue
            assert written == field.default, (name, doc.default, field.default)
    for name, annotation in real["model"].items():
        assert typing.get_args(docs["model"][name].annotation) == typing.get_args(annotation), name
        assert ast.literal_eval(docs["model"][name].default) == ViTScratchConfig().__getattribute__(name), name
    text = describe_keys()
    for section in ("model", "training"):
        for name in docs[section]:
            assert f"{section}.{name}  (" in text or f"{section}.{name}" in FORBIDDEN_KEYS, name


# A module's folder says whether it may import torch: these folders (and modules) import the standard library only,
# so the command line answers --help and config errors at once. Everything else in vit_scratch may import torch.
STDLIB_ONLY = ("vit_scratch/__init__.py", "vit_scratch/cli", "vit_scratch/config", "vit_scratch/atomic.py",
               "vit_scratch/errors.py", "vit_scratch/backends.py", "vit_scratch/sources.py")
HEAVY = ("torch", "transformers", "datasets", "numpy", "matplotlib", "huggingface_hub", "modeling_vit_scratch")


def stdlib_only_modules() -> list[str]:
    files = []
    for entry in STDLIB_ONLY:
        path = REPO / entry
        files += sorted(path.glob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    return [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in files]


def test_the_light_folders_import_nothing_heavy():
    """The standard-library-only modules, imported one after the other in a fresh interpreter, load none of the
    heavy packages (the first that does is named: it, or a module it imports, pulls them in); the entry points
    import only vit_scratch. One interpreter for all: a module alone imports a subset of what all of them do."""
    modules = stdlib_only_modules()
    assert {"vit_scratch", "vit_scratch.cli.train", "vit_scratch.errors", "vit_scratch.config.schema"} <= set(
        modules)
    script = f"""import importlib, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
    if heavy:
        sys.exit(f"importing {{module}} loaded {{heavy}}")
print(len(sys.argv) - 1)"""
    result = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == str(len(modules)), result.stdout + result.stderr[-2000:]
    for script in ("train.py", "validate.py", "predict.py", "export.py", "demo.py"):
        assert imports_of(REPO / script) <= {f"vit_scratch.cli.{script[:-3]}"}, script  # no script imports another


def test_the_key_snapshot_is_what_the_classes_say():
    """keys.json regenerated from the real classes is the committed file: an upgrade of transformers (a field moved
    to a base class, an enum member added, a new annotation) shows up here as a diff, never as a silent change."""
    from vit_scratch.config.make_keys import generate, render
    from vit_scratch.config.schema import KEYS_FILE

    committed, current = KEYS_FILE.read_text(encoding="utf-8"), render(generate())
    diff = [line for line in difflib.unified_diff(committed.splitlines(), current.splitlines(), "keys.json",
                                                  "the classes", lineterm="", n=1)]
    assert not diff, "keys.json is out of date (run `make keys`):\n" + "\n".join(diff[:60])
