"""The sweep's winner as the record config: between the two runs of a GPU visit (bench/gpu_visit_1.sh, _2.sh).

    python bench/winner.py SWEEP_JSON [--budget-minutes 5] [--into configs/cifar10_fast.json] [--dry-run]

Picks the variant with the highest validation accuracy (never test: the test split chooses nothing), applies the
sweep's `set` and the variant's `set` to the sweep's base config, and sizes `training.num_train_epochs` so that the
run ends inside the budget, from what the sweep measured on that device:

  seconds per epoch   the median gap between the variant's consecutive validation points (training + evaluation)
  start-up            the first variant's first validation point minus one of its epochs (imports, decoding,
                      compilation), plus the compilation of the winner's model when it was not the first variant
  tail                the winner's wall time after its last validation point (the fit diagnosis, validation, test)

  epochs = floor(0.95 * (budget - reserve - start-up - tail) / seconds per epoch)

and writes the config (keys in the base config's order, new keys appended). Prints what it chose and why.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from vit_scratch.config.schema import apply_overrides, check_keys, read_config_file

SAFETY = 0.95  # the record's epochs leave 5% of the training time unplanned (a device's speed varies a little)
RESERVE_S = 15.0  # bench/time_to_accuracy.py's default --reserve-seconds: training stops this long before the budget
DROPPED = ("training.logging_steps",)  # the sweep's bookkeeping, not the recipe


def seconds_per_epoch(row: dict) -> float:
    times = [seconds for seconds, _, _ in row["curve"]]
    if len(times) < 3:
        raise SystemExit(f"error: variant {row['name']!r} has {len(times)} validation points; need 3 to time an epoch")
    return statistics.median(b - a for a, b in zip(times, times[1:], strict=False))


def plan(report: dict, budget_s: float) -> dict:
    rows = [r for r in report["variants"] if "error" not in r and r.get("eval_accuracy") is not None
            and r["path"] == "trainer"]
    if not rows:
        raise SystemExit("error: no variant of the sweep finished through the Trainer with a validation accuracy")
    best = max(rows, key=lambda r: r["eval_accuracy"])
    first = report["variants"][0]
    spe = seconds_per_epoch(best)
    startup = first["curve"][0][0] - seconds_per_epoch(first)
    if best is not first:  # the winner's own compilation, measured the same way in its own row
        startup += max(0.0, best["curve"][0][0] - spe)
    tail = best["wall_seconds"] - best["curve"][-1][0]
    epochs = math.floor(SAFETY * (budget_s - RESERVE_S - startup - tail) / spe)
    if epochs < 1:
        raise SystemExit(f"error: {best['name']!r}: {spe:.2f} s per epoch, {startup:.0f} s start-up and {tail:.0f} s "
                         f"of final evaluations leave no epoch in {budget_s:.0f} s")
    return {"variant": best, "seconds_per_epoch": spe, "startup_s": startup, "tail_s": tail, "epochs": epochs}


def write_config(report: dict, sweep: dict, chosen: dict, into: Path, dry_run: bool) -> dict:
    base, _ = read_config_file(sweep["config"])
    overrides = {**sweep.get("set", {}), **chosen["variant"]["set"], "training.num_train_epochs": chosen["epochs"]}
    overrides = {k: v for k, v in overrides.items() if k not in DROPPED}
    config = apply_overrides(base, [(key, json.dumps(value)) for key, value in overrides.items()])
    check_keys(config)  # every key and value one train.py accepts (transformers' own checks need the GPU: bf16)
    if not dry_run:
        into.write_text(json.dumps(config, indent=2) + "\n")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_json", help="sweep.json as bench/sweep.py wrote it")
    parser.add_argument("--budget-minutes", type=float, default=5.0)
    parser.add_argument("--into", default="configs/cifar10_fast.json")
    parser.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.sweep_json).read_text())
    sweep = json.loads(Path(report["sweep"]).read_text())
    chosen = plan(report, 60 * args.budget_minutes)
    for row in report["variants"]:
        mark = "->" if row is chosen["variant"] else "  "
        shown = "FAILED" if "error" in row else \
            f"validation {row.get('eval_accuracy')}, test {row.get('test_accuracy')}"
        print(f"{mark} {row['name']}: {shown}")
    print(f"winner {chosen['variant']['name']!r} on {report['hardware']}: {chosen['seconds_per_epoch']:.2f} s per "
          f"epoch, {chosen['startup_s']:.0f} s start-up, {chosen['tail_s']:.0f} s of final evaluations -> "
          f"{chosen['epochs']} epochs in {args.budget_minutes:g} minutes")
    write_config(report, sweep, chosen, Path(args.into), args.dry_run)
    print(("would write " if args.dry_run else "wrote ") + args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
