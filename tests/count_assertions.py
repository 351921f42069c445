"""How many assertions tests/ makes, per file and in total: a reorganisation of the suite must not lower it.

Counted from the source (ast), not from a run: `assert` statements, `pytest.raises` / `pytest.warns` /
`pytest.fail` calls, calls of `*.assert*` / `assert_*` functions (torch.testing.assert_close, np.testing...,
our assert_same_run, assert_png...), and calls of the suite's asserting helpers (ASSERTING_HELPERS: each checks
a result and fails the test). Usage: python tests/count_assertions.py [FOLDER]
"""

import ast
import sys
from pathlib import Path

ASSERTING_HELPERS = {"check_ok", "error_line", "finished", "wait_for", "check_shapes"}
PYTEST_CHECKS = {"raises", "warns", "fail", "deprecated_call"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def count(source: str) -> int:
    n = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assert):
            n += 1
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            if name.startswith("assert") or name in ASSERTING_HELPERS:
                n += 1
            elif name in PYTEST_CHECKS and isinstance(node.func, ast.Attribute) and _name(node.func.value) == "pytest":
                n += 1
    return n


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent
    counts = {p.name: count(p.read_text()) for p in sorted(folder.glob("*.py"))}
    for name, n in counts.items():
        if n:
            print(f"{n:6d}  {name}")
    print(f"{sum(counts.values()):6d}  total ({sum(1 for n in counts.values() if n)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
