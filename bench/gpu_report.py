"""Is the GPU busy? For one config: the model-only step against the whole Trainer path, in images/s, TFLOP/s and MFU.

    python bench/gpu_report.py [--config configs/cifar10_fast.json] [--steps 100] [--warmup 25]
                               [--compile-modes default reduce-overhead] [--json bench/gpu_report.json]

Rows (each on random uint8 CIFAR-shaped data kept on the device, the config's precision, compilation, optimizer):
  model only    one fixed normalised batch: forward, backward, clip, optimizer, schedule (bench/steps.py)
  bare loop     + a random batch gathered from the device-resident data and the config's augmentation
  Trainer       ViTScratchTrainer.train(): sampler, batch cut, augmentation, accelerate, callbacks, logging
`Trainer / model` is the share of the model's speed that the whole path keeps; `outside the model` is the share of a
Trainer step not spent in the model step. TFLOP/s count the matmuls of forward + backward (3x forward; attention
included) and MFU divides by the device's dense bf16 peak. The Trainer run also proves the step sync-free: the
second half of its warm-up (after compilation, before the timed steps) runs under
`torch.cuda.set_sync_debug_mode("error")` (bench/steps.SyncTrap), and the number of torch.compile graphs and
recompilations is reported.

Without a GPU it runs the same code on the CPU with a tiny model and batch (what `make test` checks); its MFU is n/a.
Writes a JSON (default bench/gpu_report.json on a GPU, nothing on CPU unless --json is given).
"""

import argparse
import json
import os
import platform
import time

import torch
from steps import (
    TINY_MODEL,
    SyncTrap,
    bare_loop_seconds,
    experiment_for,
    model_step_seconds,
    random_split,
    trainer_seconds,
)

from modeling_vit_scratch import ViTScratchConfig
from vit_scratch.config.schema import read_config_file

# Dense bf16 tensor-core peaks (TFLOP/s) by device name.
PEAKS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def training_flops_per_image(config: ViTScratchConfig) -> float:
    """Matmul FLOPs of one image's forward + backward (backward = 2x forward)."""
    d, m, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = (config.image_size // config.patch_size) ** 2
    t = n + 1
    patch = 2 * n * config.num_channels * config.patch_size**2 * d
    per_layer = 2 * t * 4 * d * d + 2 * t * 2 * d * m + 2 * 2 * t * t * d  # q/k/v/o, MLP, QK^T and AV
    head = 2 * d * config.num_labels
    return 3.0 * (patch + layers * per_layer + head)


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def compile_counters() -> dict:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "recompiles": int(sum(counters["recompiles"].values()))}


def report(args) -> dict:
    cuda = args.device == "cuda"
    config, _ = read_config_file(args.config)
    if not cuda:  # a CPU smoke run of the same code: tiny model and batch
        config["model"] = {**config.get("model", {}), **TINY_MODEL}
        config["model"].pop("attn_implementation", None)
        config["training"]["torch_compile"] = False
        config["training"].pop("torch_compile_mode", None)  # a mode alone turns TrainingArguments' compile back on
    batch = args.batch_size or (config["training"]["per_device_train_batch_size"] if cuda else 16)
    model_config = ViTScratchConfig(**{k: v for k, v in config["model"].items() if k != "attn_implementation"},
                                    num_labels=10)
    flops = training_flops_per_image(model_config)
    device_name = torch.cuda.get_device_name(0) if cuda else f"{platform.machine()} CPU ({os.cpu_count()} cores)"
    peak = peak_tflops(device_name) if cuda else None
    steps, warmup = args.steps, args.warmup
    split = random_split(batch * 8)

    def row(name: str, seconds: float, extra: dict | None = None) -> dict:
        images_per_s = batch / seconds
        tflops = flops * images_per_s / 1e12
        out = {"path": name, "ms_per_step": 1e3 * seconds, "images_per_s": images_per_s, "tflops": tflops,
               "mfu": tflops / peak if peak else None, **(extra or {})}
        mfu = f"{out['mfu']:.1%}" if peak else "n/a"
        print(f"  {name:<34s} {out['ms_per_step']:8.2f} ms/step {images_per_s:10.0f} img/s {tflops:8.1f} TFLOP/s "
              f"MFU {mfu}", flush=True)
        return out

    print(f"{device_name}, torch {torch.__version__}; {args.config}: {model_config.num_hidden_layers} x "
          f"{model_config.hidden_size}, batch {batch}, bf16 {config['training'].get('bf16', False) and cuda}, "
          f"torch_compile {config['training'].get('torch_compile', False)}; {flops / 1e9:.2f} GFLOP per image "
          f"(forward + backward); peak {peak or 'n/a'} TFLOP/s", flush=True)
    results = {"device": device_name, "torch": torch.__version__, "config": args.config, "batch": batch,
               "gflop_per_image": flops / 1e9, "peak_tflops": peak, "rows": []}
    for mode in args.compile_modes:
        overrides = [] if mode == "default" else [("training.torch_compile_mode", mode)]
        label = "" if mode == "default" else f" [{mode}]"
        start = time.perf_counter()
        model_s = model_step_seconds(experiment_for(config, batch, warmup + steps, args.device, overrides), steps,
                                     warmup, args.device)
        bare_s = bare_loop_seconds(experiment_for(config, batch, warmup + steps, args.device, overrides), split,
                                   steps, warmup, args.device)
        before = compile_counters()
        # The sync check watches the warm-up steps after compilation, so that its cost stays out of the timing.
        trap = SyncTrap(first=max(1, warmup // 2), last=warmup - 1, device=args.device)
        sync_free = True
        try:
            trainer_s = trainer_seconds(experiment_for(config, batch, warmup + steps, args.device, overrides), split,
                                        steps, warmup, args.device, callbacks=[trap])
        except RuntimeError as error:  # a sync inside the checked steps: report it, then time without the trap
            print(f"  SYNC inside the training step: {str(error).splitlines()[0][:200]}", flush=True)
            sync_free = False
            trainer_s = trainer_seconds(experiment_for(config, batch, warmup + steps, args.device, overrides), split,
                                        steps, warmup, args.device)
        after = compile_counters()
        rows = [row("model only" + label, model_s), row("bare loop (data + augmentation)" + label, bare_s),
                row("Trainer" + label, trainer_s, {"sync_free_steps": trap.checked_steps if sync_free else 0,
                                                   "compiled_graphs": after["graphs"] - before["graphs"],
                                                   "recompiles": after["recompiles"] - before["recompiles"]})]
        summary = {"compile_mode": mode, "trainer_over_model": model_s / trainer_s,
                   "outside_model_share": 1 - model_s / trainer_s, "sync_free": sync_free,
                   "seconds": time.perf_counter() - start}
        print(f"  Trainer / model = {summary['trainer_over_model']:.3f}; outside the model: "
              f"{summary['outside_model_share']:.1%} of a step; sync-free over {rows[2]['sync_free_steps']} steps: "
              f"{sync_free}; Trainer graphs compiled {rows[2]['compiled_graphs']}, recompiles "
              f"{rows[2]['recompiles']} ({summary['seconds']:.0f} s)", flush=True)
        results["rows"] += rows
        results.setdefault("summary", []).append(summary)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10_fast.json")
    parser.add_argument("--batch-size", type=int, help="default: the config's (16 on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default 100 on a GPU, 4 on CPU)")
    parser.add_argument("--warmup", type=int, help="steps before timing, compilation included (default 25 / 4)")
    parser.add_argument("--compile-modes", nargs="+", default=["default"],
                        help="torch_compile_mode values to compare (default: the config's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="output file (default bench/gpu_report.json on a GPU)")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (100 if cuda else 4)
    args.warmup = args.warmup or (25 if cuda else 4)
    results = report(args)
    path = args.json or ("bench/gpu_report.json" if cuda else None)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
