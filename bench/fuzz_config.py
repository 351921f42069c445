"""Every config key set in turn to hostile values, through the config stage: each must be accepted or refused with one
ConfigError naming the key; any other exception is a traceback a user would see.

    python bench/fuzz_config.py                      # every key of keys.json x the 24 values below (3,624 configs)
    python bench/fuzz_config.py --random 20000       # and as many random (key, value) draws, nested values included

The config stage is what `train.py` runs before any data is read: the sections' checks (`schema.build_experiment`:
key names, types, ranges, the model's rules, TrainingArguments' own, report_to, push_to_hub) and the output
folder's (`check_output_dir`). Each config is configs/cifar10_cpu.json with one key replaced. It prints the counts
(accepted, refused, raised) and every raw exception with its key and value; exit 1 when any raised.
"""

import argparse
import contextlib
import io
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vit_scratch.config import schema  # noqa: E402
from vit_scratch.errors import ConfigError  # noqa: E402

BASE = REPO / "configs" / "cifar10_cpu.json"

# The 24 values every key gets: wrong types, extremes, non-finite numbers, control characters, nested containers,
# a path that climbs out of the folder.
HOSTILE = ["", "x" * 5000, math.nan, math.inf, -math.inf, 1e308, 1e12, -1e12, 0, -1, 2**63, 0.5, True, False, None,
           [], [None, "a", 1.5], {}, {"a": {"b": [1, {}]}}, "a\x00b", "../../../../../../../../tmp/x", "\n\t\r",
           "é☃\u202e", "null"]


def keys() -> list[str]:
    """Every key of every section, nested ones dotted (dataset.augmentation.mixup_alpha), from keys.json."""
    def walk(prefix, docs):
        for name, doc in docs.items():
            yield from walk(f"{prefix}{name}.", doc) if isinstance(doc, dict) else [f"{prefix}{name}"]

    return [key for section, docs in schema.section_docs().items() for key in walk(f"{section}.", docs)]


def with_value(config: dict, key: str, value) -> dict:
    config = json.loads(json.dumps(config))
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = value
    return config


def config_stage(config: dict) -> None:
    """What train.py checks before reading any data (run in a scratch folder: output_dir may be relative)."""
    from vit_scratch.training.checkpoints import check_output_dir

    check_output_dir(schema.build_experiment(config), resume=False)


def outcome(config: dict, key: str) -> tuple[str, str]:
    """("accepted" | "refused" | "raised", detail): refused means a ConfigError naming the key's section."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            config_stage(config)
        except ConfigError as err:
            section = key.split(".")[0]
            return ("refused", str(err)) if section in str(err) else ("raised", f"ConfigError not naming it: {err}")
        except Exception as err:  # what this script counts
            return "raised", f"{type(err).__name__}: {str(err)[:200]}"
    return "accepted", ""


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 2 else 7)
    if kind == 0:
        return rng.choice(HOSTILE)
    if kind == 1:
        return rng.choice([rng.randint(-2**64, 2**64), rng.randint(-3, 3)])
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), 10.0 ** rng.randint(-320, 308), -(10.0 ** rng.randint(-5, 308))])
    if kind == 3:
        return "".join(chr(rng.choice([rng.randrange(0, 32), rng.randrange(32, 0x2FFF)]))
                       for _ in range(rng.randrange(8)))
    if kind in (4, 5, 6):
        return rng.choice([None, True, False, "none", "all", "epoch", "steps", "no", "auto", "cpu"])
    if kind == 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["a", "", "\x00", "x" * 300]): random_value(rng, depth + 1) for _ in range(rng.randrange(3))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=0, help="random (key, value) draws after the grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-grid", action="store_true", help="only the random draws")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    base = json.loads(BASE.read_text())
    cases = [] if args.no_grid else [(key, value) for key in keys() for value in HOSTILE]
    rng = random.Random(args.seed)
    cases += [(rng.choice(keys()), random_value(rng)) for _ in range(args.random)]
    counts, raised = {"accepted": 0, "refused": 0, "raised": 0}, []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        for key, value in cases:
            kind, detail = outcome(with_value(base, key, value), key)
            counts[kind] += 1
            if kind == "raised":
                raised.append(f"{key}={value!r:.60}: {detail}")
    seconds = time.perf_counter() - start
    print("\n".join(raised))
    print(f"{len(cases):,} configs in {seconds:.0f} s: {counts['accepted']:,} accepted, {counts['refused']:,} "
          f"refused with one error naming the key, {counts['raised']:,} raised another exception")
    return 1 if raised else 0


if __name__ == "__main__":
    sys.exit(main())
