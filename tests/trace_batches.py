"""`train.py`, with every dataset batch it reads written down: for the coverage test of a multi-process launch (and,
through trace_datasets, of the one-process reference it is checked against, trained in the test's process).

Each process (and each of its decode workers) appends one JSON line per batch to $VIT_SCRATCH_TRACE/rankR.jsonl:
{"n": the dataset's length, "rows": the batch's indices into it}. Nothing else changes: the batch itself is the
dataset's own.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import train`

from vit_scratch import storage  # noqa: E402


def traced(method):
    def __getitems__(self, indices):
        line = json.dumps({"n": len(self), "rows": [int(i) for i in indices]}) + "\n"
        path = Path(os.environ["VIT_SCRATCH_TRACE"]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
        with path.open("a") as trace:  # one short append per batch: whole lines, also from several processes
            trace.write(line)
        return method(self, indices)

    return __getitems__


def trace_datasets(setattr=setattr) -> None:
    """Every storage's dataset writes down its reads (`setattr`: a test's monkeypatch.setattr, to undo it)."""
    for dataset in (storage.DeviceImageDataset, storage.HostImageDataset, storage.StreamImageDataset):
        setattr(dataset, "__getitems__", traced(dataset.__getitems__))


if __name__ == "__main__":
    import train

    trace_datasets()
    sys.exit(train.main())
