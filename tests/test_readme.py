"""The README against the code: its config tables, the keys, files and commands it names must exist, so that the
documentation cannot drift silently from what the code accepts."""

import re

import pytest

from vit_scratch.config.schema import FORBIDDEN_KEYS, SECTIONS, TRAINING_DEFAULTS, section_docs

from .helpers import REPO

README = (REPO / "README.md").read_text()


def table_keys(heading: str) -> set[str]:
    """The keys in the first column of the table under a `### heading` (cells like "`a` / `b`" or "`a`, `b`")."""
    section = README.split(f"### {heading}", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`(\w+)`", row.split("|")[1])}


@pytest.mark.parametrize("heading, section", [("`dataset`", "dataset"), ("`dataset.augmentation`", "augmentation"),
                                              ("`model`", "model")])
def test_config_tables_list_exactly_the_keys(heading, section):
    docs = section_docs()
    keys = docs["dataset"]["augmentation"] if section == "augmentation" else docs[section]
    expected = {name for name in keys if name != "augmentation"}  # dataset.augmentation has its own table
    assert table_keys(heading) == expected


def test_training_defaults_and_refused_keys_are_all_documented():
    training = README.split("### `training`", 1)[1].split("\n### ", 1)[0]
    for key in TRAINING_DEFAULTS:
        assert f"`{key}=" in training, key
    for key in FORBIDDEN_KEYS:
        assert f"`{key.split('.', 1)[1]}`" in training, key


def test_every_key_named_in_the_readme_exists():
    """`--SECTION.KEY` overrides, `SECTION.KEY` mentions and `--set SECTION.KEY=...` all name real keys."""
    docs = section_docs()
    named = set(re.findall(r"(?<![\w/.])((?:dataset|model|training)\.[a-z_]+(?:\.[a-z_]+)?)", README))
    named -= {"model.safetensors", "training.learnig_rate"}  # the weights file; the typo shown failing
    assert len(named) > 20
    for dotted in sorted(named):
        section, *path = dotted.split(".")
        node = docs[section]
        for part in path:
            assert isinstance(node, dict) and part in node, f"README names {dotted}, which is not a config key"
            node = node[part]
    assert set(SECTIONS) == {"dataset", "model", "training"}


def test_every_file_and_command_named_in_the_readme_exists():
    folders = "configs|bench|tests|modeling_vit_scratch|vit_scratch"
    paths = set(re.findall(rf"(?<![\w/.-])((?:{folders})/[\w/.-]+\.(?:py|json|yaml))", README))
    paths |= set(re.findall(r"python ([\w/]+\.py)", README))
    assert len(paths) > 10
    for path in sorted(paths):
        assert (REPO / path).is_file(), f"README names {path}, which does not exist"
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"`make ([\w-]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README names `make {target}`, which is not a target"


def message_templates() -> list[str]:
    """Every string the code can print, with each `{...}` of an f-string as \\0: implicit concatenation across lines
    is already one literal in the syntax tree, so a message reads as one string."""
    import ast

    texts = []
    for path in [*(REPO / "modeling_vit_scratch").rglob("*.py"), *(REPO / "vit_scratch").rglob("*.py"),
                 *REPO.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                texts.append("".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    return texts


def test_common_errors_table_quotes_messages_the_code_prints():
    """Each message in the README's "Common errors" table: its fixed words (between the parts that vary: names,
    numbers, quoted values, "...") must each occur in a string of the code."""
    section = README.split("**Common errors.**", 1)[1].split("\n\n", 2)[1]
    messages = re.findall(r"^\| `([^`]+)`", section, re.M)
    assert len(messages) >= 10
    templates = message_templates()
    for message in messages:
        # What varies: quoted values, numbers, `=values`, config key names, "...", "[...]" and "N"; and a message
        # is often "A: B" or "A; B" composed of two strings; an exception's own text (after its type) is a
        # library's.
        varies = (r"'[^']*'|\.\.\.|\[[^\]]*\]|\b\d+\b|\bN\b|=\S*|\b(?:dataset|model|training|ViTScratchConfig)\.[\w.]+"
                  r"|: |; |\b\w+Error\b.*$")
        fixed = [f.strip(" ;:,") for f in re.split(varies, message)]
        fixed = [f for f in fixed if len(f.split()) >= 2]
        assert fixed, message
        for fragment in fixed:  # a message may be composed of several strings (a hint appended, a prefix)
            # One of its words may be a value: "expected float", "tensorboard is not installed", "whose X is".
            words = fragment.split(" ")
            forms = [fragment] + [" ".join(words[:i] + ["\0"] + words[i + 1:]) for i in range(len(words))]
            assert any(form in t for form in forms for t in templates), \
                f"README's common error {message!r}: the code prints no {fragment!r}"


def test_the_architecture_map_is_the_layout():
    """Every file and folder the README's architecture map names exists where the map puts it, and every module of
    both packages is on the map."""
    block = README.split("## Architecture\n\n```\n", 1)[1].split("```", 1)[0]
    named, stack = set(), []
    for line in block.splitlines():
        indent = (len(line) - len(line.lstrip())) // 2
        head = line.split("  ", 1)[0].strip() if indent == 0 else line.strip().split("  ", 1)[0]
        stack = stack[:indent]
        for name in head.replace(",", " ").split():
            path = "/".join([*stack, name.rstrip("/")])
            named.add(path)
            assert (REPO / path).exists(), f"the architecture map names {path}, which does not exist"
        if head.endswith("/"):
            stack.append(head.rstrip("/"))
    modules = {str(p.relative_to(REPO)) for package in ("modeling_vit_scratch", "vit_scratch")
               for p in (REPO / package).rglob("*.py") if "metrics/" not in str(p.relative_to(REPO))}
    modules = {m for m in modules if not m.endswith("__init__.py") or m.count("/") == 1}
    assert modules <= named, f"not on the README's architecture map: {sorted(modules - named)}"
