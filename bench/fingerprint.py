"""A tiny seeded run's fingerprint: its step logs and every saved weight, hashed, in each storage mode.

A refactor of the training path (the Trainer's seams, the run's steps) must leave the arithmetic alone. Record the
fingerprint before, compare after, on the same machine and stack: any difference in a logged loss, gradient norm,
learning rate, metric or weight (final model, every checkpoint's model and training weights) is reported.

    python bench/fingerprint.py [--cifar10 ../shared/datasets/cifar10] --json before.json
    python bench/fingerprint.py --compare before.json

Three runs of `train.py` (one thread each, so the numbers are bit-reproducible on a CPU), 4-image-wide model:
  device  mixup + cutmix + random erasing + label smoothing, EMA, gradient accumulation 2, best model at end
  host    crop + flip, host storage
  stream  crop + flip, stream storage with one DataLoader worker
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[1]
TIMING = ("runtime", "per_second", "wall_seconds")

COMMON = ["--config", str(REPO / "configs" / "cifar10.json"),
          "--dataset.max_train_samples", "192", "--dataset.validation_size", "64", "--dataset.max_eval_samples", "64",
          "--dataset.max_test_samples", "64", "--training.num_train_epochs", "2",
          "--training.per_device_train_batch_size", "32", "--training.per_device_eval_batch_size", "48",
          "--training.logging_steps", "1", "--training.seed", "7",
          "--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "2",
          "--model.intermediate_size", "64"]
RUNS = {
    "device": ["--dataset.storage", "device", "--dataset.augmentation.mixup_alpha", "0.8",
               "--dataset.augmentation.cutmix_alpha", "1.0", "--dataset.augmentation.random_erasing_prob", "0.25",
               "--training.label_smoothing_factor", "0.1", "--training.ema_decay", "0.9",
               "--training.gradient_accumulation_steps", "2", "--training.load_best_model_at_end", "true"],
    "host": ["--dataset.storage", "host"],
    "stream": ["--dataset.storage", "stream", "--training.dataloader_num_workers", "1"],
}


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(path: Path) -> str:
    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].tobytes())
    return h.hexdigest()[:16]


def fingerprint(out: Path) -> dict:
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [{k: v for k, v in entry.items() if not any(t in k for t in TIMING)} for entry in state["log_history"]]
    results = json.loads((out / "all_results.json").read_text())
    results = {k: v for k, v in results.items() if not any(t in k for t in TIMING)}
    weights = {str(p.relative_to(out)): weights_digest(p) for p in sorted(out.rglob("*.safetensors"))}
    return {"logs": digest(logs), "results": digest(results), "weights": weights,
            "final_loss": next((e["loss"] for e in reversed(logs) if "loss" in e), None),
            "test_accuracy": results.get("test_accuracy")}


def run(name: str, cifar10: str, workdir: Path) -> dict:
    out = workdir / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_CACHE": str(workdir / "cache")}
    cmd = [sys.executable, str(REPO / "train.py"), *COMMON, "--dataset.name", cifar10,
           "--training.output_dir", str(out), *RUNS[name]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: train.py exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return fingerprint(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar10", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--json", help="write the fingerprint here")
    parser.add_argument("--compare", help="a fingerprint recorded before: exit 1 on any difference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prints = {name: run(name, args.cifar10, Path(tmp)) for name in args.runs}
    print(json.dumps(prints, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(prints, indent=1) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = [name for name in prints if prints[name] != before.get(name)]
        for name in differ:
            print(f"DIFFERENT {name}:\n before {json.dumps(before.get(name))}\n after  {json.dumps(prints[name])}")
        print("fingerprint: " + (f"{len(differ)} of {len(prints)} runs differ" if differ
                                 else f"all {len(prints)} runs bit-identical to {args.compare}"))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
