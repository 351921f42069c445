"""Inference speed of the deploy formats on the CPU: torch eager, torch.compile, ONNX Runtime fp32 and int8.

For each model size (configs/*.json's model section, random weights: speed does not depend on them) the model is
exported as export.py exports it (vit_scratch.export: fp32, then int8 dynamic quantization of the MatMul/Gemm
weights), then the four backends run the same random batch in turn, round after round (A B C D A B C D ...), so
that drift in machine load hits all alike. Reported per backend: batch 1 latency (median ms) and batch 64
images/s (median), and both as ratios to torch eager measured in the same rounds (the median of the per-round
ratios). Threads: torch's and onnxruntime's defaults (every core), or --threads N for both.

    .venv/bin/python bench/export.py [--configs configs/cifar10_cpu.json configs/cifar10_fast.json] [--rounds 5]
                                     [--threads N] [--output numbers.json]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
from vit_scratch import export

SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "patch_size",
              "image_size", "num_channels", "pooling")
BACKENDS = ("torch eager", "torch.compile", "ORT fp32", "ORT int8")


def build(path: str) -> ViTScratchForImageClassification:
    """The model a config file trains (its shape; sdpa attention, no dropout), random weights, eval mode."""
    given = json.loads(Path(path).read_text()).get("model", {})
    defaults = ViTScratchConfig()
    shape = {key: given.get(key, getattr(defaults, key)) for key in SHAPE_KEYS}
    torch.manual_seed(0)
    return ViTScratchForImageClassification(ViTScratchConfig(**shape, num_labels=10, attn_implementation="sdpa")).eval()


def runners(model, folder: Path, threads: int | None) -> dict:
    """backend -> function(batch as numpy float32) running one forward pass to logits."""
    fp32, int8 = folder / "model.onnx", folder / "model_quantized.onnx"
    export.export_fp32(model, fp32)
    export.quantize_int8(fp32, int8)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("ORT fp32", fp32), ("ORT int8", int8))}
    compiled = torch.compile(model)

    def torch_run(module):
        def run(x):
            with torch.inference_mode():
                return module(pixel_values=torch.from_numpy(x)).logits

        return run

    def ort_run(session):
        return lambda x: session.run(None, {"pixel_values": x})[0]

    return {"torch eager": torch_run(model), "torch.compile": torch_run(compiled),
            **{name: ort_run(session) for name, session in sessions.items()}}


def measure(run_of: dict, x: np.ndarray, rounds: int, calls: int) -> dict[str, list[float]]:
    """Per backend, the seconds per call of each round (`calls` calls per round), backends interleaved."""
    times = {name: [] for name in run_of}
    for run in run_of.values():  # warm-up: torch.compile compiles for this shape here
        run(x)
        run(x)
    for _ in range(rounds):
        for name, run in run_of.items():
            start = time.perf_counter()
            for _ in range(calls):
                run(x)
            times[name].append((time.perf_counter() - start) / calls)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["configs/cifar10_cpu.json", "configs/cifar10_fast.json"])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per backend and batch size")
    parser.add_argument("--threads", type=int, help="threads for torch and onnxruntime (default: theirs)")
    parser.add_argument("--output", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}; "
          f"{args.rounds} rounds, backends interleaved; medians")
    results = {}
    rng = np.random.default_rng(0)
    for path in args.configs:
        model = build(path)
        c = model.config
        name = f"{Path(path).name} ({c.num_hidden_layers}x{c.hidden_size}, {model.num_parameters() / 1e6:.2f} M)"
        with tempfile.TemporaryDirectory() as folder:
            run_of = runners(model, Path(folder), args.threads)
            sizes = {backend: None for backend in BACKENDS}
            sizes["ORT fp32"] = (Path(folder) / "model.onnx").stat().st_size
            sizes["ORT int8"] = (Path(folder) / "model_quantized.onnx").stat().st_size
            x1 = rng.standard_normal((1, c.num_channels, c.image_size, c.image_size), dtype=np.float32)
            x64 = rng.standard_normal((64, c.num_channels, c.image_size, c.image_size), dtype=np.float32)
            one = measure(run_of, x1, args.rounds, calls=20)
            many = measure(run_of, x64, args.rounds, calls=2)
        row = {}
        print(f"\n{name}\n| backend | batch 1 ms | vs eager | batch 64 img/s | vs eager | file MB |\n"
              "|---|---|---|---|---|---|")
        for backend in BACKENDS:
            ms = 1000 * statistics.median(one[backend])
            ips = 64 / statistics.median(many[backend])
            # ratios per round (same round, same machine load), then their median
            latency_ratio = statistics.median(e / t for e, t in zip(one["torch eager"], one[backend], strict=True))
            speed_ratio = statistics.median(e / t for e, t in zip(many["torch eager"], many[backend], strict=True))
            row[backend] = {"batch1_ms": ms, "batch1_speedup": latency_ratio, "batch64_images_per_s": ips,
                            "batch64_speedup": speed_ratio, "file_bytes": sizes[backend]}
            mb = f"{sizes[backend] / 1e6:.1f}" if sizes[backend] else "-"
            print(f"| {backend} | {ms:.2f} | {latency_ratio:.2f}x | {ips:,.0f} | {speed_ratio:.2f}x | {mb} |")
        results[name] = row
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
