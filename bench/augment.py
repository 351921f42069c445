"""Time each augmentation op (kornia vs hand-written where both were considered) against a model training step.

    .venv/bin/python bench/augment.py [--device cpu|cuda] [--reps 20] [--threads N]

Prints the fastest ms per call (the minimum over --reps calls: the helpers share 2 noisy CPU cores, and
contention only ever adds time) for batches of 128 and 512 CIFAR-sized images (3x32x32), then the forward+backward
time of ViTScratchForImageClassification(ViTScratchConfig(num_labels=10)) at batch 128 and the ratios.
"""

import argparse
import time
import warnings

import kornia.augmentation as KA
import torch
from kornia.augmentation.auto import RandAugment

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
from modeling_vit_scratch.training.augment import BatchAugment, random_crop_flip, random_erasing
from modeling_vit_scratch.training.config import AugmentArguments

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
OFF = dict(random_crop_padding=0, horizontal_flip=False, randaugment_num_ops=0, mixup_alpha=0.0, cutmix_alpha=0.0,
           random_erasing_prob=0.0)
CONFIGS = {  # name -> AugmentArguments overrides of OFF, label smoothing
    "normalise only": ({}, 0.0),
    "normalise + mixup": ({"mixup_alpha": 0.8}, 0.0),
    "normalise + cutmix": ({"cutmix_alpha": 1.0}, 0.0),
    "default (crop 4 + flip)": ({"random_crop_padding": 4, "horizontal_flip": True}, 0.0),
    "all on (crop, flip, RA 2/9, erase .25, mix, ls .1)": (
        {"random_crop_padding": 4, "horizontal_flip": True, "randaugment_num_ops": 2, "randaugment_magnitude": 9,
         "random_erasing_prob": 0.25, "mixup_alpha": 0.8, "cutmix_alpha": 1.0}, 0.1),
}


def best_ms(fn, reps: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def bench_batch(b: int, device: torch.device, reps: int) -> dict[str, float]:
    """ms per call of each op and BatchAugment configuration on a batch of b random 3x32x32 images."""
    images = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (b,), device=device)
    x = images.float() / 255
    kornia_crop = KA.RandomCrop((32, 32), padding=4, padding_mode="reflect").to(device)
    kornia_flip = KA.RandomHorizontalFlip().to(device)
    kornia_erase = KA.RandomErasing(p=1.0, value=0.0).to(device)
    randaugment = RandAugment(n=2, m=9).to(device)
    ops = {
        "crop pad 4   kornia RandomCrop": lambda: kornia_crop(x),
        "crop pad 4   hand gather": lambda: random_crop_flip(x, 4, False),
        "flip         kornia RandomHorizontalFlip": lambda: kornia_flip(x),
        "flip         hand where": lambda: torch.where(torch.rand(b, 1, 1, 1, device=device) < 0.5, x.flip(-1), x),
        "crop + flip  hand one gather (used)": lambda: random_crop_flip(x, 4, True),
        "RandAugment 2/9 kornia, ops per batch (used)": lambda: randaugment(x),
        "RandAugment 2/9 kornia, ops per 16 images": lambda: torch.cat([randaugment(c) for c in x.split(16)]),
        "erase p=1    kornia RandomErasing": lambda: kornia_erase(x),
        "erase p=1    hand mask (used)": lambda: random_erasing(x, 1.0),
    }
    for name, (overrides, smoothing) in CONFIGS.items():
        aug = BatchAugment(AugmentArguments(**{**OFF, **overrides}), MEAN, STD, 10, smoothing).to(device)
        ops[f"BatchAugment: {name}"] = lambda aug=aug: aug(images, labels)
    return {name: best_ms(fn, reps, device) for name, fn in ops.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 gives steadier numbers on a busy machine")
    cli = parser.parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    device = torch.device(cli.device)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"best of {cli.reps}, ms per call")

    totals = {}
    for b in (128, 512):
        print(f"\nbatch {b}")
        for name, ms in bench_batch(b, device, cli.reps).items():
            totals[b, name] = ms
            print(f"  {name:<62s} {ms:8.3f}")

    # Per-sample randomness of kornia: distinct crop offsets in one batch of 128, RandAugment's op choice.
    kornia_crop = KA.RandomCrop((32, 32), padding=4, padding_mode="reflect").to(device)
    randaugment = RandAugment(n=2, m=9).to(device)
    cropped = kornia_crop(torch.rand(128, 3, 32, 32, device=device))
    offsets = kornia_crop._params["src"][:, 0].unique(dim=0).shape[0]
    augmented = randaugment(torch.rand(128, 3, 32, 32, device=device))
    print(f"\nkornia RandomCrop: {offsets} distinct offsets in a batch of 128 (of 81), output on {cropped.device}; "
          f"RandAugment: output on {augmented.device}, ops for the whole batch: "
          f"{[p.name for p in randaugment._params]}")

    model = ViTScratchForImageClassification(ViTScratchConfig(num_labels=10)).to(device).train()
    pixels = torch.randn(128, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (128,), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixels, labels=labels).loss.backward()

    step_ms = best_ms(step, max(3, cli.reps // 4), device, warmup=1)
    print(f"\nmodel step (forward+backward, batch 128): {step_ms:.1f} ms")
    for name in CONFIGS:
        ratio = totals[128, f"BatchAugment: {name}"] / step_ms
        print(f"  augment/step, batch 128, {name:<52s} {ratio:6.1%}")


if __name__ == "__main__":
    main()
