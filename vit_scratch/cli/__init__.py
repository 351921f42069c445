"""The command line: standard library only (overrides, the error line, shared flags, the five entry points). It stands
on the rest of the package; no module outside cli/ imports from it (tests/test_structure.py)."""
