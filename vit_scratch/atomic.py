"""Atomic writes: a reader (or a crash) never sees a half-written file. Every file a run writes beside a model goes
through `atomic_path` (standard library only)."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PathLike = str | os.PathLike


def write_json(path: PathLike, data) -> None:
    """Write `data` as JSON (sorted keys, indent 2) atomically: a temp file in the same folder, then os.replace."""
    write_text(Path(path), json.dumps(data, sort_keys=True, indent=2, default=_jsonable) + "\n")


def write_text(path: PathLike, text: str) -> None:
    """Write `text` (UTF-8) atomically, synced to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to, renamed over `path` only if the block succeeds: a reader
    (or a crash) never sees a half-written file. Every file this project writes beside a model goes through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        # A failed write() names no file: name the one meant (only on an OSError(errno, strerror), which shows it;
        # a one-argument OSError would lose its own text)
        if isinstance(error, OSError) and error.strerror and not error.filename:
            error.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """A hidden folder beside `path` to fill, which replaces `path` (a folder, removed first if it exists) only if the
    block succeeds: a reader never sees a half-filled folder, and a failure leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        if path.is_dir():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays from metrics
        return value.tolist()
    return str(value)  # paths, enums and the like
