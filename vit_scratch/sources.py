"""A model or dataset named by the user: a local path or a Hub id (standard library only)."""

import os
from pathlib import Path


def is_local_path(name: str) -> bool:
    """True when `name` can only be a local path: it exists, or it is written as only a path can be ("./x", "/x",
    "~/x", "a/b/c", a Windows separator). Anything else may be a Hub id (NAME or OWNER/NAME): a local path that is
    not there is then reported as missing, never looked up on the Hub."""
    return (Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))
