"""What the entry points share: overrides on the command line, the error line, common flags (stdlib only)."""

import argparse
import logging
import sys

from vit_scratch.backends import BACKENDS, ONNX_FILES


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Every `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) is an override; the rest is `parser`'s."""
    own, overrides = [], []
    argv = list(argv)
    while argv:
        token = argv.pop(0)
        if not (token.startswith("--") and "." in token.split("=", 1)[0]):
            own.append(token)
        elif "=" in token:
            overrides.append(tuple(token[2:].split("=", 1)))
        elif argv:
            overrides.append((token[2:], argv.pop(0)))
        else:
            parser.error(f"{token} needs a value")
    return own, overrides


def report_error(err: BaseException) -> None:
    """`error: MESSAGE` as one write: the processes of a multi-process launch share one stderr, and a line written
    in pieces (print writes the text, then the newline) can be cut into by another process's.

    Then the tracebacks of `err` and of the exceptions it chains are dropped: their frames hold the failed run (its
    model, data and DataLoader iterators), and an error re-raised from a DataLoader worker sits in a reference cycle
    (torch's reraise frame holds the exception whose traceback holds that frame). Left to the garbage collector, a
    caller that goes on in the same process (a notebook, the tests) keeps all of it until a later collection, which
    then stalls 5 s per DataLoader worker (the collector finalises the iterator's queues before the iterator, which
    then waits out its join timeout). Dropped here, the run is freed at once and its workers told to stop."""
    sys.stderr.write(f"error: {err}\n")
    sys.stderr.flush()
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        err.__traceback__ = None
        err = err.__cause__ or err.__context__


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true", help="let a Hub model of another custom type run "
                        "its own code (a vit_scratch model never needs it: this package's classes load it)")


def add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="torch (the saved weights), or "
                        "onnxruntime (an ONNX file export.py wrote; no torch needed to run it)")
    parser.add_argument("--onnx-file", metavar="PATH", default=ONNX_FILES["fp32"], help=f"with --backend onnxruntime: "
                        f"the file in MODEL ({ONNX_FILES['fp32']}, fp32; {ONNX_FILES['int8']}, int8)")
