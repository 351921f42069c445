"""The README and docs/ against the code: the generated key reference, the keys, files and commands they name, the
error messages they quote, the architecture map, and every link between them, so that the documentation cannot
drift silently from what the code accepts."""

import re

import pytest

from vit_scratch.config.schema import FORBIDDEN_KEYS, SECTIONS, TRAINING_DEFAULTS, section_docs

from .helpers import REPO

README = (REPO / "README.md").read_text()
DOCS = {path: path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
ALL_TEXT = "\n".join(DOCS.values())


def doc(name: str) -> str:
    return (REPO / "docs" / name).read_text()


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line, e.g. "## Common errors") up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    return text.split(f"\n{heading}\n", 1)[1].split(f"\n{level} ", 1)[0]


def test_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def test_the_readme_keeps_the_two_commands_and_maps_every_doc():
    """`make train` and `make test` (what .ci/run runs) are the front page's commands; every docs/ page is linked."""
    commands = README.split("```bash\n", 1)[1].split("```", 1)[0]
    assert re.search(r"^make train$", commands, re.M) and re.search(r"^make test$", commands, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in section(README, "## Documentation"), f"README's map lacks docs/{page.name}"


def test_the_configuration_reference_is_generated_from_keys_json():
    """docs/configuration.md's reference block is what `make docs` renders from keys.json now."""
    from vit_scratch.config.make_keys import DOCS_END, DOCS_START, reference

    text = doc("configuration.md")
    block = text[text.index(DOCS_START):text.index(DOCS_END) + len(DOCS_END)]
    assert block == reference(), "docs/configuration.md's key reference is out of date: run `make docs`"


def reference_keys(heading: str) -> set[str]:
    """The keys in the first column of the generated table under `### heading`."""
    rows = section(doc("configuration.md"), f"### {heading}").splitlines()
    return {re.match(r"\| `(\w+)` \|", row).group(1) for row in rows if row.startswith("| `")}


@pytest.mark.parametrize("heading, name", [
    ("`dataset` (`DataArguments`, vit_scratch/config/schema.py)", "dataset"),
    ("`dataset.augmentation` (`AugmentArguments`, vit_scratch/config/schema.py)", "augmentation"),
    ("`model` (`ViTScratchConfig`, modeling_vit_scratch/configuration_vit_scratch.py)", "model"),
    ("`training` (`transformers.TrainingArguments` + `ema_decay`, `ema_warmup`)", "training")])
def test_the_reference_lists_exactly_the_accepted_keys(heading, name):
    docs = section_docs()
    keys = docs["dataset"]["augmentation"] if name == "augmentation" else docs[name]
    section_name = "dataset" if name == "augmentation" else name
    expected = {key for key in keys if key != "augmentation" and f"{section_name}.{key}" not in FORBIDDEN_KEYS}
    assert reference_keys(heading) == expected
    assert len(expected) >= {"dataset": 13, "augmentation": 9, "model": 18, "training": 100}[name]


def test_training_defaults_and_refused_keys_are_all_documented():
    training = section(doc("configuration.md"), "## `training`")
    for key in TRAINING_DEFAULTS:
        assert f"`{key}=" in training, key
    for key in FORBIDDEN_KEYS:
        assert f"`{key.split('.', 1)[1]}`" in training, key
    refused = section(doc("configuration.md"), "### Refused keys")
    assert set(re.findall(r"^\| `([\w.]+)` \|", refused, re.M)) == set(FORBIDDEN_KEYS)


def test_every_key_named_in_the_docs_exists():
    """`--SECTION.KEY` overrides, `SECTION.KEY` mentions and `--set SECTION.KEY=...` all name real keys."""
    docs = section_docs()
    named = set(re.findall(r"(?<![\w/.-])((?:dataset|model|training)\.[a-z_]+(?:\.[a-z_]+)?)", ALL_TEXT))
    named -= {"model.safetensors", "training.learnig_rate"}  # the weights file; the typo shown failing
    assert len(named) > 20
    for dotted in sorted(named):
        section_name, *path = dotted.split(".")
        node = docs[section_name]
        for part in path:
            assert isinstance(node, dict) and part in node, f"the docs name {dotted}, which is not a config key"
            node = node[part]
    assert set(SECTIONS) == {"dataset", "model", "training"}


def test_every_file_and_command_named_in_the_docs_exists():
    folders = "configs|bench|tests|modeling_vit_scratch|vit_scratch"
    paths = set(re.findall(rf"(?<![\w/.-])((?:{folders})/[\w/.-]+\.(?:py|json|yaml))", ALL_TEXT))
    paths |= set(re.findall(r"python ([\w/]+\.py)", ALL_TEXT))
    assert len(paths) > 10
    for path in sorted(paths):
        assert (REPO / path).is_file(), f"the docs name {path}, which does not exist"
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"`make ([\w-]+)", ALL_TEXT)):
        assert re.search(rf"^{target}:", makefile, re.M), f"the docs name `make {target}`, which is not a target"


def github_anchor(heading: str) -> str:
    """The `#anchor` GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        anchor = github_anchor(heading)
        found.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def test_github_anchor_follows_githubs_rules():
    assert github_anchor("The gap to 90% is open (issue 16)") == "the-gap-to-90-is-open-issue-16"
    assert github_anchor("`dataset.augmentation`") == "datasetaugmentation"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_every_relative_link_and_anchor_between_the_docs_resolves():
    """Each `[text](target)` and `![alt](image)` of README.md and docs/*.md outside code blocks: the file exists, and
    its `#anchor` (or a bare `#anchor` in the same file) is a heading there."""
    checked = 0
    for path, text in DOCS.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(REPO)} links to {target}"
            assert linked.is_file(), f"{where}: no such file"
            assert REPO in linked.parents, f"{where}: outside the repository"
            if anchor:
                assert anchor in anchors(linked.read_text()), f"{where}: no heading with that anchor"
            checked += 1
    assert checked >= 20


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
    """Each message in docs/troubleshooting.md's "Common errors" table: its fixed words (between the parts that vary:
    names, numbers, quoted values, "...") must each occur in a string of the code."""
    messages = re.findall(r"^\| `([^`]+)`", section(doc("troubleshooting.md"), "## Common errors"), re.M)
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
                f"docs' common error {message!r}: the code prints no {fragment!r}"


def test_the_architecture_map_is_the_layout():
    """Every file and folder docs/architecture.md's map names exists where the map puts it, and every module of
    both packages is on the map."""
    block = doc("architecture.md").split("## The map\n\n```\n", 1)[1].split("```", 1)[0]
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
    assert modules <= named, f"not on docs/architecture.md's map: {sorted(modules - named)}"
