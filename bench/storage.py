"""224-px fine-tuning from an image folder in each `dataset.storage` mode: img/s, peak memory, time to the first step.

    python bench/storage.py                                    # CPU: 2,000 and 8,000 images, a tiny ViT, 40 steps
    python bench/storage.py --images 5000 50000 --model base   # a GPU: ViT-B/16, bf16

What it makes (once, under --root): an image folder of N 224-px JPEGs in 10 classes (smooth random pictures, ~10 kB
each, like photos in size and decoding cost), and a transformers `ViTForImageClassification` with random weights (no
network), saved with a ViTImageProcessor, as `model.pretrained`: `--model base` is ViT-B/16 (86 M parameters);
`small`, `tiny` and `micro` keep patch 16 at 224 px (196 tokens) but are narrower and shallower, because ViT-B
trains at ~1 img/s on 2 CPU cores: on a CPU the micro model (1 layer, 16 wide) and no augmentation make the data
path, not the model, the thing measured.

Each (size, mode) runs `train_and_evaluate` in a fresh child process with a fresh `datasets` cache (cold: device and
host decode the folder, stream prepares the folder's file list), no evaluation, no test split, and measures:
- time to first step: from the child's start (imports included) to the end of the first optimizer step;
- img/s: images per second from the end of step `--warmup` to the end of the last step (a GPU synchronised at both
  ends only);
- peak memory: the training process's peak RSS (getrusage), and the peak of the PSS of the process and its
  DataLoader workers summed (sampled every 0.1 s; PSS counts shared pages once);
- data wait: the share of that time the training process spent waiting in the DataLoader for a batch (stream: the
  decode workers not keeping up); with --model base, a worker's own decode rate and how many workers the measured
  device-mode speed would need.
Ratios are against `device` for the same size, run in the same invocation. Results: --out (JSON) and a table.
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

START = time.perf_counter()  # a child's clock starts before its heavy imports
REPO = Path(__file__).resolve().parents[1]
MODELS = {  # transformers ViTConfig fields; all patch 16 at 224 px
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "micro": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32),
}
CLASSES = 10


def make_image_folder(root: Path, n: int, size: int = 224) -> Path:
    """ROOT/images-N/class_K/IIIII.jpg: N smooth random pictures (a 7 x 7 colour grid upscaled, plus mild noise)."""
    import numpy as np
    from PIL import Image

    folder = root / f"images-{n}"
    if (folder / "complete").is_file():
        return folder
    rng = np.random.RandomState(n)
    for i in range(n):
        grid = rng.randint(0, 256, (7, 7, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.randint(-8, 9, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"class_{i % CLASSES}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
    (folder / "complete").write_text(str(n))
    return folder


def make_model(root: Path, size: str) -> Path:
    """A transformers ViTForImageClassification of `size`, random weights, with its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = root / f"vit-{size}-random"
    if (folder / "config.json").is_file():
        return folder
    config = ViTConfig(image_size=224, patch_size=16, num_labels=CLASSES, **MODELS[size])
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)
    return folder


# ----------------------------------------------------------------------------------------------- one run (child)


class MemorySampler(threading.Thread):
    """Peak of the summed PSS of this process and its children, every `interval` seconds."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.process, self.interval, self.peak, self.stop = psutil.Process(), interval, 0, threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def child(args) -> dict:
    import torch
    import torch.utils.data.dataloader as dataloader
    from transformers import TrainerCallback

    from vit_scratch.config.schema import build_experiment
    from vit_scratch.training.run import train_and_evaluate

    sampler = MemorySampler()
    sampler.start()
    cuda = torch.cuda.is_available()
    marks, waited = {}, [0.0]

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step in (1, args.warmup, args.steps):
                if cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    next_batch = dataloader._BaseDataLoaderIter.__next__

    def timed_next(self):  # the training process waiting for a batch (after the warm-up steps)
        start = time.perf_counter()
        try:
            return next_batch(self)
        finally:
            if args.warmup in marks and args.steps not in marks:
                waited[0] += time.perf_counter() - start

    dataloader._BaseDataLoaderIter.__next__ = timed_next
    with tempfile.TemporaryDirectory() as tmp:
        training = {"output_dir": f"{tmp}/out", "per_device_train_batch_size": args.batch, "max_steps": args.steps,
                    "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                    "logging_steps": 10**6, "disable_tqdm": True, "report_to": "none", "learning_rate": 1e-4,
                    "warmup_steps": 0, "bf16": cuda}
        if args.mode == "stream" and args.workers is not None:
            training["dataloader_num_workers"] = args.workers
        config = {"dataset": {"name": args.folder, "storage": args.mode, "cache_dir": f"{tmp}/cache",
                              "validation_size": 0, "test_split": None,
                              "augmentation": {"random_crop_padding": 16 if args.augment == "on" else 0,
                                               "horizontal_flip": args.augment == "on"}},
                  "model": {"pretrained": args.pretrained},
                  "training": training}
        train_and_evaluate(build_experiment(config), callbacks=(Clock(),))
        result = {"mode": args.mode, "images": args.images[0], "model": args.model, "batch": args.batch,
                  "augment": args.augment,
                  "steps": args.steps, "device": torch.cuda.get_device_name() if cuda else "cpu",
                  "time_to_first_step_s": marks[1] - START,
                  "img_per_s": (args.steps - args.warmup) * args.batch / (marks[args.steps] - marks[args.warmup]),
                  "data_wait_share": waited[0] / (marks[args.steps] - marks[args.warmup]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_pss_with_workers_mb": sampler.peak / 2**20}
        if args.mode == "stream":  # one process's decode rate: how many workers would keep up
            from vit_scratch.config.schema import DataArguments
            from vit_scratch.data import open_image_data

            lazy = open_image_data(DataArguments(name=args.folder, validation_size=0, test_split=None,
                                                 cache_dir=f"{tmp}/cache"), 224, 3).lazy()
            n = min(4 * args.batch, len(lazy.train))
            start = time.perf_counter()
            lazy.train.images[torch.arange(n)]
            result["decode_img_per_s_per_worker"] = n / (time.perf_counter() - start)
    sampler.stop.set()
    return result


def data_path_child(args) -> dict:
    """The data path alone, the modes interleaved in one process: the Trainer's own train dataloader (sampler,
    accelerate's wrapper, stream's workers), to the device, then `model_inputs` (augmentation, normalisation), no
    model step. `--rounds` rounds of `--batches` batches per mode; img/s is each mode's total images over its
    total time (a GPU synchronised at the end of each block)."""
    import torch

    from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
    from vit_scratch.augment import BatchAugment
    from vit_scratch.config.schema import build_experiment
    from vit_scratch.storage import load_data, make_dataset
    from vit_scratch.training.trainer import ViTScratchTrainer

    cuda = torch.cuda.is_available()
    batches, seconds, tmp = {}, {}, tempfile.mkdtemp()
    for mode in args.modes:
        training = {"output_dir": f"{tmp}/{mode}", "per_device_train_batch_size": args.batch, "max_steps": 10,
                    "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                    "report_to": "none", "disable_tqdm": True, "bf16": cuda}
        if mode == "stream" and args.workers is not None:
            training["dataloader_num_workers"] = args.workers
        augmentation = {"random_crop_padding": 16 if args.augment == "on" else 0,
                        "horizontal_flip": args.augment == "on"}
        dataset = {"name": args.folder, "storage": mode, "cache_dir": f"{tmp}/cache", "validation_size": 0,
                   "test_split": None, "augmentation": augmentation}
        experiment = build_experiment({"dataset": dataset, "training": training})
        device = experiment.training.device
        data, storage, _ = load_data(experiment.dataset, 224, 3, None, device)
        if storage == "stream" and args.workers is None:
            from vit_scratch.storage import default_workers

            experiment.training.dataloader_num_workers = default_workers()
        model = ViTScratchForImageClassification(ViTScratchConfig(image_size=224, patch_size=16, num_labels=CLASSES,
                                                                  **MODELS["micro"]))
        trainer = ViTScratchTrainer(model=model, args=experiment.training,
                                    train_dataset=make_dataset(data.train, storage, device),
                                    augment=BatchAugment(experiment.dataset.augmentation, (0.5,) * 3, (0.5,) * 3,
                                                         CLASSES))
        trainer.model.train()
        loader = trainer.get_train_dataloader()
        batches[mode] = [trainer, loader, iter(loader)]
        seconds[mode] = 0.0
        for _ in range(3):  # warm-up: workers started, first batches through
            take(batches[mode])
    for _ in range(args.rounds):
        for mode in args.modes:
            start = time.perf_counter()
            for _ in range(args.batches):
                out = take(batches[mode])
            if cuda:
                torch.cuda.synchronize()
            seconds[mode] += time.perf_counter() - start
            del out
    images = args.rounds * args.batches * args.batch
    return {"images": args.images[0], "batch": args.batch, "rounds": args.rounds, "batches": args.batches,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "workers": batches["stream"][0].args.dataloader_num_workers if "stream" in batches else None,
            "img_per_s": {mode: images / seconds[mode] for mode in args.modes}}


def take(state: list):
    """The next batch of a [trainer, loader, iterator] on the device, as the model takes it (a new epoch when one
    ends)."""
    trainer, loader, iterator = state
    try:
        batch = next(iterator)
    except StopIteration:
        state[2] = iter(loader)
        batch = next(state[2])
    return trainer.model_inputs(trainer._prepare_inputs(batch), training=trainer.model.training)


# ----------------------------------------------------------------------------------------------- the driver


def run_child(args, folder: Path, model: Path, mode: str | None, n: int) -> dict:
    """One run in a fresh process: a training run in `mode`, or (mode None) the interleaved data path of all."""
    cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--pretrained", str(model),
           "--images", str(n), "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batch", str(args.batch), "--augment", "on" if args.augment else "off", "--rounds", str(args.rounds),
           "--batches", str(args.batches), "--modes", *args.modes]
    cmd += ["--mode", mode] if mode else ["--data-path"]
    cmd += ["--workers", str(args.workers)] if args.workers is not None else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{mode}, {n} images failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line.removeprefix("RESULT "))


def median_run(runs: list[dict]) -> dict:
    """Each measured number's median over the runs (peak memory: the largest), with the count of runs."""
    out = dict(runs[0], runs=len(runs))
    for key, value in runs[0].items():
        if isinstance(value, float):
            values = sorted(r[key] for r in runs)
            out[key] = values[-1] if key.startswith("peak") else statistics.median(values)
    return out


def table(results: list[dict]) -> str:
    lines = ["| images | mode | img/s | vs device | time to first step (s) | peak RSS (MB) | peak PSS + workers (MB) "
             "| data wait |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        device = next((d for d in results if d["images"] == r["images"] and d["mode"] == "device"), None)
        ratio = f"{r['img_per_s'] / device['img_per_s']:.3f}" if device else "-"
        lines.append(f"| {r['images']:,} | {r['mode']} | {r['img_per_s']:.1f} | {ratio} | "
                     f"{r['time_to_first_step_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
                     f"{r['peak_pss_with_workers_mb']:,.0f} | {r['data_wait_share']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000], help="dataset sizes to measure")
    parser.add_argument("--modes", nargs="+", default=["device", "host", "stream"],
                        choices=["device", "host", "stream", "auto"])
    parser.add_argument("--model", choices=sorted(MODELS), default=None,
                        help="ViT size at 224 px / patch 16 (default: base on a GPU, micro on a CPU)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="training runs per (size, mode), the modes interleaved; the table shows medians (0: none)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the img/s clock starts")
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (default: 256 GPU, 32 CPU)")
    parser.add_argument("--augment", choices=["on", "off"], default=None,
                        help="random crop (padding 16) + flip on the device (default: on a GPU only; on a CPU they "
                             "cost more than the data path measured here, and are the same in every mode)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU: torch threads of the training process (OMP_NUM_THREADS; default 1). On this shared "
                             "2-core machine 2 threads made the micro model's step 10x slower and erratic (OpenMP "
                             "barriers waiting for a descheduled thread), hiding the data path")
    parser.add_argument("--workers", type=int, default=None, help="stream's decode workers (default: the run's)")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vit-scratch-bench-storage"),
                        help="where the image folders and the model are made (kept for the next run)")
    parser.add_argument("--out", default=None, help="results JSON (default: print only)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="data path: rounds of interleaved blocks per mode (0: no data-path measurement)")
    parser.add_argument("--batches", type=int, default=40, help="data path: batches per block")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-path", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--pretrained", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(data_path_child(args) if args.data_path else child(args)), flush=True)
        return

    import torch

    cuda = torch.cuda.is_available()
    args.model = args.model or ("base" if cuda else "micro")
    args.augment = cuda if args.augment is None else args.augment == "on"
    args.threads = args.threads or (None if cuda else 1)
    args.batch = args.batch or (256 if cuda else 32)
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    model = make_model(root, args.model)
    runs, paths = [], []
    for n in args.images:
        folder = make_image_folder(root, n)
        for _ in range(args.repeat):
            for mode in args.modes:
                runs.append(run_child(args, folder, model, mode, n))
                print(json.dumps(runs[-1]), flush=True)
        if args.rounds:
            paths.append(run_child(args, folder, model, None, n))
            print(json.dumps(paths[-1]), flush=True)
    results = [median_run([r for r in runs if r["images"] == n and r["mode"] == mode])
               for n in args.images for mode in args.modes] if runs else []
    if results:
        print(f"\n{args.model} ViT, 224 px, batch {args.batch}, augmentation {'on' if args.augment else 'off'}, "
              f"{args.steps} steps ({args.warmup} warm-up), {results[0]['device']}, {os.cpu_count()} CPU cores "
              f"({args.threads or 'all'} torch thread(s) in training), "
              f"medians of {args.repeat} run(s)\n" + table(results))
    stream = [r for r in results if "decode_img_per_s_per_worker" in r]
    for r in stream:
        device = next((d for d in results if d["images"] == r["images"] and d["mode"] == "device"), None)
        if device:
            print(f"{r['images']:,} images: a decode worker makes {r['decode_img_per_s_per_worker']:.0f} img/s; "
                  f"device mode's {device['img_per_s']:.0f} img/s needs "
                  f"{math.ceil(device['img_per_s'] / r['decode_img_per_s_per_worker'])} worker(s) per process")
    if paths:
        print(f"\ndata path only (the Trainer's dataloader + model_inputs, no model), modes interleaved in one "
              f"process, {args.rounds} x {args.batches} batches of {args.batch} each:")
        print("| images | " + " | ".join(f"{m} img/s" for m in args.modes) + " | " +
              " | ".join(f"{m} / device" for m in args.modes if m != "device") + " |")
        print("|---" * (2 * len(args.modes)) + "|")
        for p in paths:
            speed = p["img_per_s"]
            ratios = [f"{speed[m] / speed['device']:.3f}" for m in args.modes if m != "device" and "device" in speed]
            print(f"| {p['images']:,} | " + " | ".join(f"{speed[m]:.0f}" for m in args.modes) + " | "
                  + " | ".join(ratios) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"medians": results, "runs": runs, "data_path": paths}, indent=1)
                                  + "\n")


if __name__ == "__main__":
    main()
