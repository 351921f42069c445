"""The augmentation: what it produces (a PNG grid) and what it costs (ms per batch against a model step).

    python bench/augment.py --preview configs/cifar10_fast.json [--dataset ../shared/datasets/cifar10] \
        [--set dataset.augmentation.policy=trivialaugment ...] [--output preview.png]
    python bench/augment.py [--device cpu|cuda] [--reps 20] [--threads N]

--preview writes the grid that every training run saves as `augmentation_preview.png`: training images as stored,
then 8 draws of the config's augmentation (crop/flip, RandAugment/TrivialAugment, erasing, mixup/cutmix).
An augmentation is accepted by looking at this and by its effect on learning (bench/time_to_accuracy.py), not by
its speed alone.

Without --preview: the fastest ms per call (minimum over --reps; contention only ever adds time) of each op and of
whole BatchAugment configurations, for batches of 128 and 512 CIFAR-sized images, then the ratio to the
forward+backward time of the default ViTScratch at batch 128.

Why vit_scratch/augment.py hand-writes every op (measured here: CPU, 1 thread, batch 128, ms per call; model step
~800 ms):
- crop + flip: one `gather` from the reflect-padded batch reads each image's random window, mirrored or not
  (0.9 ms). kornia's RandomCrop is 2-3x slower (2.3 ms) and reads its crop boxes back to the host
  (`.cpu().tolist()`: a device sync per call); its flip (0.65 ms) is no faster than a `where` (0.47 ms).
- RandAugment / TrivialAugmentWide (`autoaugment.py`): torchvision's ops and magnitudes, each image drawing its own
  ops. kornia 0.9's RandAugment, used before, is not the published one (enhance factors always below 1, solarize
  threshold m/30, invert in the pool, ops drawn once per batch): with it the fast recipe reached 32% CIFAR-10 test
  accuracy on an H100.
- random erasing: a box mask + `masked_fill` (0.95 ms vs kornia's 1.2 ms, fewer kernels, and the log-uniform
  aspect ratio of torchvision/timm).
- mixup / cutmix: timm style (partner = the batch reversed, one lambda per batch), every decision on the device.
"""

import argparse
import time

import torch

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
from vit_scratch.augment import BatchAugment, random_crop_flip, random_erasing
from vit_scratch.autoaugment import BatchAutoAugment
from vit_scratch.config.schema import AugmentArguments

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
OFF = dict(random_crop_padding=0, horizontal_flip=False, mixup_alpha=0.0, cutmix_alpha=0.0, random_erasing_prob=0.0)
CONFIGS = {  # name -> AugmentArguments overrides of OFF, label smoothing
    "normalise only": ({}, 0.0),
    "crop 4 + flip (the default)": ({"random_crop_padding": 4, "horizontal_flip": True}, 0.0),
    "crop, flip, RandAugment 2/9": ({"random_crop_padding": 4, "horizontal_flip": True, "policy": "randaugment"}, 0.0),
    "crop, flip, TrivialAugment": ({"random_crop_padding": 4, "horizontal_flip": True, "policy": "trivialaugment"},
                                   0.0),
    "all on (crop, flip, RA 2/9, erase .25, mix, ls .1)": (
        {"random_crop_padding": 4, "horizontal_flip": True, "policy": "randaugment", "random_erasing_prob": 0.25,
         "mixup_alpha": 0.8, "cutmix_alpha": 1.0}, 0.1),
}


def preview(config_path: str, dataset: str | None, sets: list[str], output: str) -> None:
    """The config's augmentation on its training images. Only the dataset section, the model's image size and the
    label smoothing matter: no TrainingArguments are built, so a GPU recipe (bf16) previews on a CPU too."""
    from modeling_vit_scratch import ViTScratchConfig
    from vit_scratch.config.schema import (
        MODEL_EXTRA_KEYS,
        DataArguments,
        apply_overrides,
        check_keys,
        read_config_file,
    )
    from vit_scratch.data import load_image_data
    from vit_scratch.reporting.figures import plot_augmentation_preview

    config, _ = read_config_file(config_path)
    overrides = [tuple(item.split("=", 1)) for item in sets] + ([("dataset.name", dataset)] if dataset else [])
    sections = check_keys(apply_overrides(config, overrides))
    data_args = DataArguments(**sections["dataset"])
    model = ViTScratchConfig(**{k: v for k, v in sections["model"].items() if k not in MODEL_EXTRA_KEYS})
    data = load_image_data(data_args, model.image_size, model.num_channels)
    augment = BatchAugment(data_args.augmentation, data.mean, data.std, len(data.class_names),
                           label_smoothing=sections["training"].get("label_smoothing_factor", 0.0))
    plot_augmentation_preview(augment, data.train.images, data.train.labels, data.class_names, output)
    print(f"wrote {output}: {data_args.augmentation}")


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
    randaugment, trivialaugment = BatchAutoAugment.randaugment(2, 9), BatchAutoAugment.trivialaugment()
    ops = {
        "crop + flip, one gather": lambda: random_crop_flip(x, 4, True),
        "RandAugment 2/9, per image": lambda: randaugment(x),
        "TrivialAugmentWide, per image": lambda: trivialaugment(x),
        "random erasing p=1": lambda: random_erasing(x, 1.0),
    }
    for name, (overrides, smoothing) in CONFIGS.items():
        aug = BatchAugment(AugmentArguments(**{**OFF, **overrides}), MEAN, STD, 10, smoothing).to(device)
        ops[f"BatchAugment: {name}"] = lambda aug=aug: aug(images, labels)
    return {name: best_ms(fn, reps, device) for name, fn in ops.items()}


def timings(device: torch.device, reps: int) -> None:
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; best of {reps}, ms per call")
    totals = {}
    for b in (128, 512):
        print(f"\nbatch {b}")
        for name, ms in bench_batch(b, device, reps).items():
            totals[b, name] = ms
            print(f"  {name:<62s} {ms:8.3f}")

    model = ViTScratchForImageClassification(ViTScratchConfig(num_labels=10)).to(device).train()
    pixels = torch.randn(128, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (128,), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixels, labels=labels).loss.backward()

    step_ms = best_ms(step, max(3, reps // 4), device, warmup=1)
    print(f"\nmodel step (3 x 256 forward+backward, batch 128): {step_ms:.1f} ms")
    for name in CONFIGS:
        ratio = totals[128, f"BatchAugment: {name}"] / step_ms
        print(f"  augment/step, batch 128, {name:<52s} {ratio:6.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preview", metavar="CONFIG", help="write a PNG grid of this config's augmented images")
    parser.add_argument("--dataset", help="dataset.name override for --preview, e.g. ../shared/datasets/cifar10")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for --preview (repeatable)")
    parser.add_argument("--output", default="augmentation_preview.png", help="--preview's PNG")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 gives steadier numbers on a busy machine")
    cli = parser.parse_args()
    if cli.preview:
        preview(cli.preview, cli.dataset, cli.set, cli.output)
        return
    if cli.threads:
        torch.set_num_threads(cli.threads)
    timings(torch.device(cli.device), cli.reps)


if __name__ == "__main__":
    main()
