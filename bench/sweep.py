"""Recipe sweep: several variants of a config, one after another in one launch, each under its own wall-clock budget.

    python bench/sweep.py bench/sweeps/fast_candidates.json --dataset ../shared/datasets/cifar10 --out-dir sweep_out
    python bench/sweep.py bench/sweeps/fast_candidates.json --dataset ... --tiny     # the same variants, tiny, on CPU

A sweep file names a base config, a default budget and the variants (see bench/sweeps/). A variant with
`"best_of": [earlier names]` starts from the `set` of whichever of them reached the highest validation accuracy
("the better of those, with EMA"):

    {"config": "configs/cifar10_fast.json", "budget_minutes": 1.4, "set": {"training.eval_strategy": "epoch"},
     "variants": [{"name": "as committed", "set": {"training.num_train_epochs": 40}},
                  {"name": "same, bare loop", "path": "bare", "set": {...}},
                  {"name": "ViT-Lite", "budget_minutes": 1.6, "set": {"model.hidden_size": 256, ...}}]}

Each variant is the base config + the sweep's `set` + its own `set` (SECTION.KEY: value), trained through
`train_and_evaluate` (`"path": "trainer"`, the default) or through bench/steps.py's bare loop (`"path": "bare"`: same
model, data, augmentation, optimizer and schedule, no Trainer; evaluated at the end only). Its budget is wall time
from the variant's start (data loading, compilation, evaluations included) to the end of its test evaluation;
training stops `reserve_seconds` (default 10) before it, and the row says when that cut the schedule short. Size
`num_train_epochs` to end inside the budget: a cut cosine schedule never anneals.

Writes `sweep.json` (every variant's validation curve over seconds, test accuracy, accuracy on un-augmented training
images, last training loss, img/s, epochs, wall time, or its error) and `sweep.png` (validation accuracy against
seconds, one line per variant, test accuracy in the legend) into --out-dir, after every variant (a sweep cut short
keeps what it measured). A variant that fails is recorded and the sweep goes on; the exit status is 1 if any failed.

--tiny shrinks every variant to a 1-layer model on 64 images for two epochs of 4 steps, in fp32 without compilation
on the CPU, keeping every other key: the suite runs the committed sweep files this way, so that a device's minutes
are never spent on a variant that crashes.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from steps import bare_train, evaluate  # noqa: E402
from time_to_accuracy import commit, hardware, run_once  # noqa: E402

from vit_scratch.augment import BatchAugment  # noqa: E402
from vit_scratch.config.schema import apply_overrides, build_experiment, read_config_file  # noqa: E402
from vit_scratch.data import ImageSplit, load_image_data  # noqa: E402
from vit_scratch.training.run import CLEAN_TRAIN_IMAGES, planned_steps  # noqa: E402

PATHS = ("trainer", "bare")
VARIANT_KEYS = {"name", "set", "path", "budget_minutes", "best_of"}
SWEEP_KEYS = {"description", "config", "budget_minutes", "reserve_seconds", "set", "variants"}
# --tiny: what every variant becomes (its other keys stay); 48 wide divides by 1, 2, 3, 4, 6, 8, 12 and 16 heads.
# 64 images in batches of 16: 4 steps per epoch, 2 epochs (each part of a variant runs; nothing is measured).
TINY = {"model.hidden_size": 48, "model.intermediate_size": 48, "model.num_hidden_layers": 1,
        "dataset.max_train_samples": 64, "dataset.validation_size": 32, "dataset.max_test_samples": 32,
        "training.per_device_train_batch_size": 16, "training.num_train_epochs": 2, "training.max_steps": -1,
        "training.bf16": False, "training.torch_compile": False,
        "training.torch_compile_mode": None, "training.logging_steps": 2}  # a mode alone turns compilation back on


def read_sweep(path: str) -> dict:
    """The sweep file, checked: known keys, a name per variant (unique), a known path, a budget."""
    sweep = json.loads(Path(path).read_text())
    problems = [f"unknown key {k!r} (allowed: {sorted(SWEEP_KEYS)})" for k in set(sweep) - SWEEP_KEYS]
    names = [v.get("name") for v in sweep.get("variants", [])]
    if not names:
        problems.append("no variants")
    if len(set(names)) != len(names) or None in names:
        problems.append(f"every variant needs a unique name, got {names}")
    for variant in sweep.get("variants", []):
        problems += [f"variant {variant.get('name')!r}: unknown key {k!r} (allowed: {sorted(VARIANT_KEYS)})"
                     for k in set(variant) - VARIANT_KEYS]
        if variant.get("path", "trainer") not in PATHS:
            problems.append(f"variant {variant.get('name')!r}: path must be one of {PATHS}")
        earlier = names[:names.index(variant.get("name"))] if variant.get("name") in names else []
        if any(name not in earlier for name in variant.get("best_of", [])):
            problems.append(f"variant {variant.get('name')!r}: best_of must name earlier variants, got "
                            f"{variant['best_of']}")
        if "budget_minutes" not in variant and "budget_minutes" not in sweep:
            problems.append(f"variant {variant.get('name')!r}: no budget_minutes (give one here or for the sweep)")
    if problems:
        raise SystemExit(f"error: {path}: " + "; ".join(problems))
    return sweep


def resolve_best_of(variant: dict, rows: list[dict]) -> dict:
    """A variant with `best_of: [names]` starts from the `set` of whichever of those earlier variants reached the
    highest validation accuracy (never test: the test split chooses nothing), then applies its own `set`."""
    if not variant.get("best_of"):
        return variant
    done = [r for r in rows if r["name"] in variant["best_of"] and r.get("eval_accuracy") is not None]
    if not done:
        raise RuntimeError(f"best_of {variant['best_of']}: none of them finished with a validation accuracy")
    best = max(done, key=lambda r: r["eval_accuracy"])
    return {**variant, "set": {**best["set"], **variant.get("set", {})}, "base": best["name"]}


def variant_config(sweep: dict, variant: dict, dataset: str | None, out_dir: str, tiny: bool) -> dict:
    base, _ = read_config_file(sweep["config"])
    overrides = {**sweep.get("set", {}), **variant.get("set", {})}
    if dataset:
        overrides["dataset.name"] = dataset
    if tiny:
        overrides.update(TINY)
        if overrides.get("training.eval_strategy", base["training"].get("eval_strategy")) == "steps":
            overrides["training.eval_steps"] = 2
    overrides.update({"training.output_dir": out_dir, "training.save_strategy": "no",
                      "training.load_best_model_at_end": False})
    return apply_overrides(base, [(key, json.dumps(value)) for key, value in overrides.items()])


def run_bare(config: dict, seed: int, budget_s: float, start: float, reserve_s: float) -> dict:
    """The variant through bench/steps.py's bare loop, evaluated once at the end (validation, training images, test)."""
    experiment = build_experiment(config, seed=seed)
    device = experiment.training.device
    args = experiment.training
    data = load_image_data(experiment.dataset, experiment.model.image_size, experiment.model.num_channels,
                           experiment.num_labels)
    deadline = start + budget_s - reserve_s
    train_start = time.perf_counter()
    model, info = bare_train(experiment, data, device, should_stop=lambda: time.perf_counter() >= deadline)
    train_seconds = time.perf_counter() - train_start
    augment = BatchAugment(experiment.dataset.augmentation, data.mean, data.std, model.config.num_labels).to(device)
    score = lambda split: evaluate(model, augment, split, args.per_device_eval_batch_size, args.bf16)  # noqa: E731
    n = min(len(data.train), CLEAN_TRAIN_IMAGES)
    clean = score(ImageSplit(data.train.images[:n], data.train.labels[:n]))
    val = score(data.validation)["accuracy"] if data.validation is not None else None
    test = score(data.test)["accuracy"] if data.test is not None else None
    steps_per_epoch, max_steps = planned_steps(args, len(data.train))
    wall = time.perf_counter() - start
    return {"seed": seed, "curve": [(wall, info["steps"], val)] if val is not None else [], "test_accuracy": test,
            "eval_accuracy": val, "train_clean_accuracy": clean["accuracy"], "train_final_loss": info["final_loss"],
            "train_seconds": train_seconds, "wall_seconds": wall, "within_budget": wall <= budget_s,
            "schedule_cut": info["steps"] < max_steps, "steps": info["steps"], "max_steps": max_steps,
            "epochs": info["steps"] / steps_per_epoch,
            "images_per_second": info["steps"] * args.per_device_train_batch_size / train_seconds}


def plot(rows: list[dict], path: Path, title: str) -> None:
    fig = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    for row in rows:
        if row.get("error"):
            continue
        curve = row["curve"]
        test = f"test {row['test_accuracy']:.1%}" if row.get("test_accuracy") is not None else "no test"
        cut = ", cut by the budget" if row["schedule_cut"] else ""
        label = f"{row['name']}: {test}{cut}"
        ax.plot([s for s, _, _ in curve], [a for _, _, a in curve], "o-" if len(curve) > 1 else "s", markersize=3,
                label=label)
    ax.set(title=title, xlabel="seconds from the variant's start", ylabel="validation accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None, start: float | None = None) -> int:
    """`start`: when the first variant's budget began (the process's start when run as a script; now if None)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep file (JSON), e.g. bench/sweeps/fast_candidates.json")
    parser.add_argument("--dataset", help="dataset.name override, e.g. ../shared/datasets/cifar10")
    parser.add_argument("--out-dir", default="sweep_out", help="where sweep.json and sweep.png go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these variants only")
    parser.add_argument("--tiny", action="store_true", help="every variant tiny, fp32, uncompiled (a crash check)")
    args = parser.parse_args(argv)
    sweep = read_sweep(args.sweep)
    variants = [v for v in sweep["variants"] if not args.only or v["name"] in args.only]
    if args.only and len(variants) != len(args.only):
        parser.error(f"--only: no such variant among {[v['name'] for v in sweep['variants']]}")
    out_dir = Path(args.out_dir)
    reserve = sweep.get("reserve_seconds", 10.0)
    report = {"sweep": args.sweep, "config": sweep["config"], "description": sweep.get("description"),
              "hardware": hardware(), "torch": torch.__version__, "commit": commit(), "tiny": args.tiny,
              "seed": args.seed, "variants": []}
    print(f"{args.sweep}: {len(variants)} variants of {sweep['config']} on {report['hardware']}", flush=True)
    for i, variant in enumerate(variants):
        variant_start = (start or time.perf_counter()) if i == 0 else time.perf_counter()  # 1st: pays the imports
        budget = 60 * variant.get("budget_minutes", sweep.get("budget_minutes"))
        row = {"name": variant["name"], "path": variant.get("path", "trainer"), "set": variant.get("set", {}),
               "budget_seconds": budget}
        try:
            variant = resolve_best_of(variant, report["variants"])
            row.update(set=variant.get("set", {}), **({"base": variant["base"]} if "base" in variant else {}))
            print(f"\n=== {variant['name']} ({row['path']}, budget {budget:.0f} s): {row['set']}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                config = variant_config(sweep, variant, args.dataset, tmp, args.tiny)
                if row["path"] == "trainer":  # its folder is thrown away: no model, figures or card
                    result = run_once(config, args.seed, budget, variant_start, reserve, report=False)
                else:
                    result = run_bare(config, args.seed, budget, variant_start, reserve)
            result.pop("crossed", None)
            row.update(result)
            print(f"=== {variant['name']}: test {result['test_accuracy']}, validation {result['eval_accuracy']}, "
                  f"un-augmented training images {result['train_clean_accuracy']:.4f}, last training loss "
                  f"{result['train_final_loss']}, {result['epochs']:.1f} epochs in {result['train_seconds']:.0f} s "
                  f"({result['images_per_second']:.0f} img/s), wall {result['wall_seconds']:.0f} s"
                  f"{', SCHEDULE CUT BY THE BUDGET' if result['schedule_cut'] else ''}", flush=True)
        except Exception as error:  # noqa: BLE001 (record it, and go on with the next variant)
            row["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            print(f"=== {variant['name']}: FAILED {row['error']}", file=sys.stderr, flush=True)
        finally:
            torch._dynamo.reset()  # the next variant compiles afresh (and dynamo's recompile limit is per process)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        report["variants"].append(row)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(report["variants"], out_dir / "sweep.png", f"{Path(args.sweep).name} on {report['hardware']}")
    print(f"\nwrote {out_dir / 'sweep.json'} and {out_dir / 'sweep.png'}")
    print("| variant | path | test | validation | un-augmented train | last train loss | epochs | wall s |")
    for row in report["variants"]:
        if "error" in row:
            print(f"| {row['name']} | {row['path']} | FAILED: {row['error'][:80]} | | | | | |")
        else:
            print(f"| {row['name']} | {row['path']} | {row['test_accuracy']} | {row['eval_accuracy']} | "
                  f"{row['train_clean_accuracy']:.4f} | {row['train_final_loss']} | {row['epochs']:.1f}"
                  f"{' (cut)' if row['schedule_cut'] else ''} | {row['wall_seconds']:.0f} |")
    return 1 if any("error" in row for row in report["variants"]) else 0


if __name__ == "__main__":
    sys.exit(main(start=START))
