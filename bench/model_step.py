"""Training-step throughput: ViTScratch vs transformers' ViTForImageClassification at identical shapes.

One step = forward + cross-entropy + backward + AdamW update, on random 32x32 images (patch 4 -> 65 tokens),
10 classes, fp32, SDPA attention for both, no dropout. The two models alternate step by step (A B A B ...) after
a warm-up, so drift in machine load hits both alike; the median step time per model gives images/s.

    .venv/bin/python bench/model_step.py [--batch-size 128] [--repeats 10] [--device cpu]
"""

import argparse
import statistics
import time

import torch
from transformers import ViTConfig, ViTForImageClassification

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification

# (name, layers, hidden, heads, mlp): our config defaults, and the 7-layer/384-wide CIFAR ViT (12 heads of 32, MLP x4).
SHAPES = [("3x256 h4 mlp256", 3, 256, 4, 256), ("7x384 h12 mlp1536", 7, 384, 12, 1536)]
COMMON = dict(image_size=32, patch_size=4, num_channels=3, num_labels=10, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6, attn_implementation="sdpa")


def build(layers: int, hidden: int, heads: int, mlp: int, device: str) -> dict[str, torch.nn.Module]:
    shape = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=mlp)
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
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"fp32, sdpa, 32x32 patch 4, {args.repeats} timed steps per model after {args.warmup} warm-up")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)

    for label, *shape in SHAPES:
        models = build(*shape, device=args.device)
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
        print(f"{label:>18} ({params['ours'] / 1e6:.2f}M params): "
              + " | ".join(f"{name} {rate[name]:7.1f} img/s (range {spread[name]})" for name in models)
              + f" | ours/theirs {rate['ours'] / rate['transformers']:.3f}")


if __name__ == "__main__":
    main()
