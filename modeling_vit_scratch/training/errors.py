"""Every error a run reports to the user, in one stdlib-only module (train.py imports it before anything heavy).

`ConfigError` and `DataError` stop a run before training (`error: ...`, exit 2); `TrainingStopped` subclasses end a
run early with their own exit status.
"""

import signal


class ConfigError(ValueError):
    """A bad config key or value, raised before any data is loaded; the message names the key."""


class DataError(ValueError):
    """Bad data: the message says what is wrong and where (path, split, column, row)."""


class TrainingStopped(RuntimeError):
    """Training ended before its last step; `exit_code` is what `train.py` exits with."""

    exit_code = 1


class NonFiniteLossError(TrainingStopped):
    """The training loss became NaN or inf; no checkpoint of that step was written (exit 1)."""


class Preempted(TrainingStopped):
    """SIGTERM: a checkpoint was saved and training stopped; the run continues with --resume."""

    exit_code = 128 + signal.SIGTERM  # 143, the status of a process ended by SIGTERM
