"""Time to accuracy: train a config under a wall-clock budget; when did validation accuracy cross each threshold?

    python bench/time_to_accuracy.py --config configs/cifar10_cpu.json --dataset ../shared/datasets/cifar10 \
        --budget-minutes 10 [--seeds 0 1 2] [--eval-every 200] [--set SECTION.KEY=VALUE ...] [--record]

The budget is wall time from the start of the process (the first seed; each later seed from its own start) to the
end of the test evaluation: imports, data decoding (cached after the first run), compilation, the evaluations and
the final save all count. Training stops `--reserve-seconds` before the budget even if the config asks for more
epochs (the row then says the schedule was cut), then validation, the fit diagnosis and the test split are
evaluated once. With several seeds it prints mean +- std. `--record` appends the result to bench/results.json and
rewrites the README's results table from that file, so the table holds only what this script measured. Offline (a
local dataset), set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 as for train.py. `--set` changes
any config key for this run (e.g. `--set dataset.augmentation.policy=trivialaugment`): recipe variants compared at
the same budget (a run with --set is not recorded; bench/sweep.py compares several in one launch).
"""

import time

START = time.perf_counter()  # the process's start, as near as Python gets: the budget counts from here

import argparse  # noqa: E402 (after START)
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from vit_scratch.config.schema import apply_overrides, build_experiment, read_config_file  # noqa: E402
from vit_scratch.training.run import train_and_evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

THRESHOLDS = (0.30, 0.40, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90)
RESULTS = REPO / "bench" / "results.json"
README = REPO / "README.md"
TABLE_START, TABLE_END = "<!-- results:start -->", "<!-- results:end -->"


class Budget(TrainerCallback):
    """Stops training at `deadline` (a time.perf_counter() value) and records (seconds since `start`, step,
    validation accuracy) after every evaluation during training."""

    def __init__(self, start: float, deadline: float):
        self.start, self.deadline, self.curve = start, deadline, []
        self.train_seconds, self.stopped_early, self._training = None, False, False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_start, self._training = time.perf_counter(), True

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() >= self.deadline and state.global_step < state.max_steps:
            control.should_training_stop = True
            control.should_evaluate = True  # the final point of the curve
            self.stopped_early = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # Only evaluations during training, once per step: the run's re-evaluation of the final model afterwards
        # (and the budget stop's evaluation at an epoch's last step) would repeat the last point.
        if metrics and "eval_accuracy" in metrics and self._training:
            if not self.curve or self.curve[-1][1] != state.global_step:
                self.curve.append((self.elapsed(), state.global_step, metrics["eval_accuracy"]))

    def on_train_end(self, args, state, control, **kwargs):
        self.train_seconds, self._training = time.perf_counter() - self.train_start, False
        self.steps, self.max_steps, self.epochs = state.global_step, state.max_steps, state.epoch


def run_once(config: dict, seed: int, budget_s: float, start: float, reserve_s: float, report: bool = True) -> dict:
    """One training run; the budget counts from `start` (perf_counter) to the end of the test evaluation. Without
    `report` (an output folder thrown away afterwards) the run writes no model, figures or card."""
    experiment = build_experiment(config, seed=seed)
    budget = Budget(start, start + budget_s - reserve_s)
    results = train_and_evaluate(experiment, callbacks=(budget,), report=report)
    wall = time.perf_counter() - start
    crossed = {t: next(((s, step) for s, step, acc in budget.curve if acc >= t), None) for t in THRESHOLDS}
    return {"seed": seed, "curve": budget.curve, "crossed": crossed, "test_accuracy": results.get("test_accuracy"),
            "eval_accuracy": results.get("eval_accuracy"), "train_clean_accuracy": results["train_clean_accuracy"],
            "train_final_loss": results["train_final_loss"], "train_seconds": budget.train_seconds,
            "wall_seconds": wall, "within_budget": wall <= budget_s, "schedule_cut": budget.stopped_early,
            "steps": budget.steps, "max_steps": budget.max_steps, "epochs": budget.epochs,
            "images_per_second": results.get("train_samples_per_second")}


def print_run(result: dict) -> None:
    cut = f", schedule cut at step {result['steps']} of {result['max_steps']}" if result["schedule_cut"] else ""
    print(f"\nseed {result['seed']}: test accuracy {result['test_accuracy']:.4f}, trained "
          f"{result['train_seconds']:.0f} s ({result['epochs']:.1f} epochs{cut}), "
          f"{result['images_per_second']:.0f} img/s, wall "
          f"{result['wall_seconds']:.0f} s from start to test ({'within' if result['within_budget'] else 'OVER'} "
          f"budget)")
    print(f"  fit: {result['train_clean_accuracy']:.4f} on un-augmented training images, {result['eval_accuracy']} "
          f"on validation, last training loss {result['train_final_loss']}")
    print("  validation accuracy crossed:")
    for threshold, hit in result["crossed"].items():
        when = f"{hit[0]:7.1f} s (step {hit[1]})" if hit else "    not reached"
        print(f"    {threshold:4.0%}  {when}")
    print("  curve (s, step, val acc): " + ", ".join(f"({s:.0f}, {st}, {a:.3f})" for s, st, a in result["curve"]))


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def commit() -> str:
    """The short commit of the code measured (VIT_SCRATCH_COMMIT where the copy has no .git, e.g. a GPU machine)."""
    if os.environ.get("VIT_SCRATCH_COMMIT"):
        return os.environ["VIT_SCRATCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def readme_table(rows: list[dict]) -> str:
    """The README's results table, from bench/results.json's rows, markers included."""
    lines = [TABLE_START, "| config | test accuracy (mean ± std) | seeds | budget | train time | wall, start to test | "
             "hardware | commit |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        spread = f" ± {row['std'] * 100:.2f}" if len(row["seeds"]) > 1 else " (one seed)"
        wall = f"{row['wall_seconds_max'] / 60:.1f} min" if "wall_seconds_max" in row else "not measured"
        lines.append(f"| `{row['config']}` | {row['mean'] * 100:.2f}%{spread} | "
                     f"{', '.join(map(str, row['seeds']))} | {row['budget_minutes']:g} min | "
                     f"{row['train_seconds_mean'] / 60:.1f} min | {wall} | {row['hardware']} | {row['commit']} |")
    lines.append(TABLE_END)
    return "\n".join(lines)


def write_readme_table(rows: list[dict]) -> None:
    text = README.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    README.write_text(text[:start] + readme_table(rows) + text[end:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--dataset", help="dataset.name override, e.g. ../shared/datasets/cifar10")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--reserve-seconds", type=float, default=15.0,
                        help="stop training this long before the budget: the final evaluations and save")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-every", type=int, help="evaluate every N steps (default: the config's strategy)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (repeatable; values parse as JSON when they can)")
    parser.add_argument("--record", action="store_true", help="append to bench/results.json and the README table")
    parser.add_argument("--output-dir", help="keep the run's output folder here (one seed; default: a temp folder)")
    args = parser.parse_args()
    if args.output_dir and len(args.seeds) > 1:
        parser.error("--output-dir keeps one run: give one seed")
    if args.record and args.set:
        parser.error("--record keeps the results of configs as committed: drop --set, or commit the variant")

    config, _ = read_config_file(args.config)
    overrides = [("training.save_strategy", "no"), ("training.load_best_model_at_end", "false")]
    if args.dataset:
        overrides.append(("dataset.name", args.dataset))
    overrides += [tuple(item.split("=", 1)) for item in args.set]
    if args.eval_every:
        overrides += [("training.eval_strategy", "steps"), ("training.eval_steps", str(args.eval_every))]
    runs = []
    for i, seed in enumerate(args.seeds):
        start = START if i == 0 else time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            seeded = apply_overrides(config, overrides + [("training.output_dir", args.output_dir or out)])
            result = run_once(seeded, seed, args.budget_minutes * 60, start, args.reserve_seconds,
                              report=bool(args.output_dir))  # a temporary folder: nothing to write
        runs.append(result)
        print_run(result)

    accuracies = [r["test_accuracy"] for r in runs]
    mean, std = statistics.mean(accuracies), statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"\n{args.config}: test accuracy {mean:.4f} ± {std:.4f} over seeds {args.seeds} "
          f"(budget {args.budget_minutes:g} min from process start to test, {hardware()}, commit {commit()})")
    if args.record:
        rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        keep = ("seed", "test_accuracy", "eval_accuracy", "train_clean_accuracy", "train_final_loss", "train_seconds",
                "wall_seconds", "within_budget", "schedule_cut", "epochs", "curve")
        row = {"config": args.config, "mean": mean, "std": std, "seeds": args.seeds,
               "budget_minutes": args.budget_minutes, "hardware": hardware(), "commit": commit(),
               "train_seconds_mean": statistics.mean(r["train_seconds"] for r in runs),
               "wall_seconds_max": max(r["wall_seconds"] for r in runs),
               "runs": [{k: r[k] for k in keep} for r in runs]}
        rows = [r for r in rows if (r["config"], r["hardware"]) != (row["config"], row["hardware"])] + [row]
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
        write_readme_table(rows)


if __name__ == "__main__":
    main()
