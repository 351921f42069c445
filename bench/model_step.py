"""Training-step throughput: ViTScratch vs transformers' ViTForImageClassification at identical shapes.

The shapes are those of the shipped configs (configs/*.json: width, depth, heads, MLP, patch, image size).
One step = forward + cross-entropy + backward + AdamW update, on random images, 10 classes, fp32, SDPA attention
for both, no dropout. The two models alternate step by step (A B A B ...) after a warm-up, so drift in machine
load hits both alike; the median step time per model gives images/s.

    .venv/bin/python bench/model_step.py [--configs configs/cifar10.json ...] [--batch-size 128] [--repeats 10]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification

SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "patch_size",
              "image_size", "num_channels")
COMMON = dict(num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6,
              attn_implementation="sdpa")


def config_shape(path: str) -> dict:
    """The model shape a config file trains (ViTScratchConfig's defaults for keys it leaves out)."""
    given = json.loads(Path(path).read_text()).get("model", {})
    defaults = ViTScratchConfig()
    return {key: given.get(key, getattr(defaults, key)) for key in SHAPE_KEYS}


def build(shape: dict, device: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {
        "ours": ViTScratchForImageClassification(ViTScratchConfig(**shape, **COMMON)),
        "transformers": ViTForImageClassification(ViTConfig(**shape, **COMMON)),
    }
    return {name: model.to(device).train() for name, model in models.items()}


def step(model, optimizer, x, y, sync) -> float:
    """One timed training step: forward with labels (the model's own loss), backward, AdamW update."""
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model(pixel_values=x, labels=y).loss.backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=sorted(str(p) for p in Path("configs").glob("*.json")))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"fp32, sdpa, {args.repeats} timed steps per model after {args.warmup} warm-up")
    g = torch.Generator().manual_seed(0)
    for path in args.configs:
        shape = config_shape(path)
        side, channels = shape["image_size"], shape["num_channels"]
        x = torch.randn(args.batch_size, channels, side, side, generator=g).to(device)
        y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
        label = (f"{Path(path).name}: {shape['num_hidden_layers']}x{shape['hidden_size']} "
                 f"h{shape['num_attention_heads']} mlp{shape['intermediate_size']} p{shape['patch_size']}")
        models = build(shape, device=args.device)
        optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
        params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
        assert params["ours"] == params["transformers"], params

        for _ in range(args.warmup):
            for name in models:
                step(models[name], optimizers[name], x, y, sync)
        times = {name: [] for name in models}
        for _ in range(args.repeats):
            for name in models:  # A B A B ...
                times[name].append(step(models[name], optimizers[name], x, y, sync))
        rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
        spread = {name: f"{args.batch_size / max(t):.0f}-{args.batch_size / min(t):.0f}" for name, t in times.items()}
        print(f"{label} ({params['ours'] / 1e6:.2f}M params): "
              + " | ".join(f"{name} {rate[name]:7.1f} img/s (range {spread[name]})" for name in models)
              + f" | ours/theirs {rate['ours'] / rate['transformers']:.3f}")


if __name__ == "__main__":
    main()
