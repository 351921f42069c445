"""Per-step overhead of the Trainer path: ms per step through ViTScratchTrainer against a bare PyTorch loop doing the
same arithmetic, with a model so small (1 layer, width 32) that its compute is negligible. What is left is what
surrounds the model: on a GPU that is what starves it.

    python bench/overhead.py [--config configs/cifar10_cpu.json] [--batch-sizes 64 512] [--steps 40] [--repeats 3]
                             [--augment] [--ema-decay 0.999] [--profile] [--json out.json]

Both paths use the config's training settings (optimizer, clipping, schedule, label smoothing, logging) and its
augmentation when --augment is given (else crop/flip off, as the issue's measurement). They alternate step by step
inside one run (a callback runs one bare step after each Trainer step, on its own model and data copy), so the slow
drifts of a shared machine hit both alike; the medians of the per-step times are compared, over `--repeats` runs:
ratio = Trainer / bare (1.00 = the Trainer adds nothing).
--profile prints where the Trainer path spends its Python time (cProfile, one extra run at the largest batch).
"""

import argparse
import cProfile
import json
import pstats
import statistics

import torch
from steps import TINY_MODEL, experiment_for, interleaved_seconds, random_split, trainer_seconds

from vit_scratch.config.schema import read_config_file

NO_AUGMENTATION = {"random_crop_padding": 0, "horizontal_flip": False, "policy": "none", "randaugment_num_ops": None,
                   "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "random_erasing_prob": 0.0}


def tiny_config(path: str, augment: bool) -> dict:
    config, _ = read_config_file(path)
    config["model"] = {**config.get("model", {}), **TINY_MODEL}
    config["model"].pop("attn_implementation", None)
    if not augment:
        config.setdefault("dataset", {})["augmentation"] = {**config["dataset"].get("augmentation", {}),
                                                            **NO_AUGMENTATION}
    return config


def measure(config: dict, batch: int, steps: int, warmup: int, repeats: int, device: str = "cpu") -> dict:
    split = random_split(batch * (warmup + steps + 2))
    bare, trainer = [], []
    for _ in range(repeats):
        b, t = interleaved_seconds(experiment_for(config, batch, warmup + steps, device), split, steps, warmup)
        bare.append(b)
        trainer.append(t)
    b, t = statistics.median(bare), statistics.median(trainer)
    return {"batch": batch, "bare_ms": 1e3 * b, "trainer_ms": 1e3 * t, "ratio": t / b,
            "bare_runs_ms": [1e3 * x for x in bare], "trainer_runs_ms": [1e3 * x for x in trainer]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10_cpu.json")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augment", action="store_true", help="keep the config's augmentation (default: off)")
    parser.add_argument("--ema-decay", type=float, help="training.ema_decay for the Trainer path (the bare loop keeps "
                        "none: the ratio's change is the average's cost)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    config = tiny_config(args.config, args.augment)
    if args.ema_decay is not None:
        config["training"]["ema_decay"] = args.ema_decay
    args.device = "cpu"  # a CPU benchmark: on a GPU, bench/gpu_report.py
    print(f"device={args.device} threads={torch.get_num_threads()} model=1 x 32 config={args.config} "
          f"augmentation={'as configured' if args.augment else 'off'} ema_decay={args.ema_decay} steps={args.steps} "
          f"repeats={args.repeats}")
    print(f"{'batch':>6} {'bare ms/step':>13} {'Trainer ms/step':>16} {'Trainer - bare':>15} {'ratio':>7}")
    rows = []
    for batch in args.batch_sizes:
        row = measure(config, batch, args.steps, args.warmup, args.repeats, args.device)
        rows.append(row)
        print(f"{batch:>6} {row['bare_ms']:>13.2f} {row['trainer_ms']:>16.2f} "
              f"{row['trainer_ms'] - row['bare_ms']:>15.2f} {row['ratio']:>7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "config": args.config, "augment": args.augment, "rows": rows}, f,
                      indent=2)
    if args.profile:
        batch = max(args.batch_sizes)
        split = random_split(batch * (args.warmup + args.steps + 2))
        experiment = experiment_for(config, batch, args.warmup + args.steps, args.device)
        profiler = cProfile.Profile()
        profiler.enable()
        trainer_seconds(experiment, split, args.steps, args.warmup, args.device)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
