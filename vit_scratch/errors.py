"""Every error the package reports to the user, and the two checks that raise them before any work: the ground floor
every other module stands on (standard library only; train.py imports it before anything heavy).

`ConfigError` and `DataError` stop a run before training (`error: ...`, exit 2); `TrainingStopped` subclasses end a
run early with their own exit status. `check_writable` checks an output path, `require_packages` an optional package.
"""

import importlib.util
import signal
import tempfile
from pathlib import Path


class ConfigError(ValueError):
    """A bad config key or value, raised before any data is loaded; the message names the key."""


class DataError(ValueError):
    """Bad data: the message says what is wrong and where (path, split, column, row)."""


class TrainingStopped(RuntimeError):
    """Training ended before its last step; `exit_code` is what `train.py` exits with."""

    exit_code = 1


class NonFiniteLossError(TrainingStopped):
    """The training loss became NaN or inf; no checkpoint of that step was written (exit 1)."""


class WriteFailed(TrainingStopped):
    """A file of the run could not be written (a full disk, say): the message names it, the cause, the free space and
    the last complete checkpoint to continue from with --resume (exit 1)."""


class Preempted(TrainingStopped):
    """SIGTERM: a checkpoint was saved and training stopped; the run continues with --resume."""

    exit_code = 128 + signal.SIGTERM  # 143, the status of a process ended by SIGTERM


def check_writable(path: str | Path, label: str, folder: bool) -> None:
    """Refuse, before any work, an output path that would fail only when written: a folder where a file goes, a file
    where a folder goes, or a place where nothing can be created. `label` starts the message (the key or flag and
    the path). It tries: a temporary folder is made (and removed) in the nearest folder that exists, since the
    permission bits do not tell (root passes them on a read-only or virtual filesystem such as /proc)."""
    path = Path(path)
    try:
        _check_writable(path, label, folder)
    except ConfigError:
        raise
    except (OSError, ValueError) as err:  # a name too long for the filesystem, a NUL byte, ...
        raise ConfigError(f"{label}: not a usable path ({getattr(err, 'strerror', None) or err})") from None


def _check_writable(path: Path, label: str, folder: bool) -> None:
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{label}: {'a file' if folder else 'a folder'}; expected "
                          f"{'a folder' if folder else 'a file name'}")
    target = path if folder else path.parent
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{label}: cannot create it ({existing} is a file, not a folder)")
    try:
        Path(tempfile.mkdtemp(dir=existing, prefix=".write-check-")).rmdir()
    except OSError as err:
        if existing == path:
            raise ConfigError(f"{label}: cannot write into it ({err.strerror})") from None
        raise ConfigError(f"{label}: cannot create it (making a folder in {existing} fails: {err.strerror})") from None


EXPORT_EXTRA = 'pip install -e ".[export]"'  # onnx, onnxscript, onnxruntime


def require_packages(packages, what: str) -> None:
    """An optional package missing (checked without importing it) -> ConfigError naming the `export` extra."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}, not installed: `{EXPORT_EXTRA}` (the `export` extra)")
