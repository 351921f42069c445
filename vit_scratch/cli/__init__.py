"""The command line: standard library only (errors, overrides, INI, key checks, the three entry points)."""
