"""Images/s of a Trainer-driven training run against the bare model step, same model, batches, dtype, process.

    python bench/pipeline.py [--batch-size 128] [--steps 12] [--repeats 3] [--device cpu]

The bare step is the floor of what any pipeline can do: normalise a uint8 batch already in memory, forward,
backward, AdamW. The Trainer run is our real path (DeviceImageDataset -> sampler -> accelerate -> augmentation
hook -> Trainer step), with augmentation off so both do the same arithmetic. The two alternate, and the median
of each is compared: ratio = trainer / bare (1.0 means the pipeline costs nothing).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import TrainerCallback, TrainingArguments  # noqa: E402

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification  # noqa: E402
from modeling_vit_scratch.training.augment import BatchAugment  # noqa: E402
from modeling_vit_scratch.training.config import AugmentArguments  # noqa: E402
from modeling_vit_scratch.training.data import ImageSplit  # noqa: E402
from modeling_vit_scratch.training.trainer import DeviceImageDataset, ViTScratchTrainer  # noqa: E402

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
NO_AUGMENTATION = AugmentArguments(random_crop_padding=0, horizontal_flip=False)


def make_model(device) -> ViTScratchForImageClassification:
    torch.manual_seed(0)
    config = ViTScratchConfig(num_labels=10, hidden_dropout_prob=0.0)  # 3 x 256, patch 4, 32x32: the default
    return ViTScratchForImageClassification(config).to(device).train()


def bare_run(split: ImageSplit, batch_size: int, steps: int, warmup: int, device) -> float:
    """Images/s of the plain loop over the same in-memory batches."""
    model = make_model(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    augment = BatchAugment(NO_AUGMENTATION, MEAN, STD, num_classes=10).to(device)
    images, labels = split.images.to(device), split.labels.to(device)
    order = torch.randperm(len(labels), device=device)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        index = order[(step * batch_size) % len(labels):][:batch_size]
        loss = model(pixel_values=augment.normalize(images[index]), labels=labels[index]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


class StepClock(TrainerCallback):
    """Times the steps after the warm-up, as the bare loop does."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def trainer_run(split: ImageSplit, batch_size: int, steps: int, warmup: int, device) -> float:
    """Images/s of ViTScratchTrainer over the same data, augmentation off, no eval/save/log in the timed span."""
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, max_steps=warmup + steps,
            learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant", optim="adamw_torch",
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
            use_cpu=device.type == "cpu", dataloader_pin_memory=False, disable_tqdm=True,
            logging_nan_inf_filter=False, remove_unused_columns=False, seed=0,
        )
        clock = StepClock(warmup)
        trainer = ViTScratchTrainer(
            model=make_model(device), args=args, train_dataset=DeviceImageDataset(split),
            augment=BatchAugment(NO_AUGMENTATION, MEAN, STD, num_classes=10), callbacks=[clock],
        )
        trainer.train()
    return clock.steps * batch_size / (clock.end - clock.start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    n = args.batch_size * (args.warmup + args.steps)
    generator = torch.Generator().manual_seed(0)
    split = ImageSplit(images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                       labels=torch.randint(0, 10, (n,), generator=generator))
    bare, trainer = [], []
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        bare.append(bare_run(split, args.batch_size, args.steps, args.warmup, device))
        trainer.append(trainer_run(split, args.batch_size, args.steps, args.warmup, device))
    b, t = statistics.median(bare), statistics.median(trainer)
    print(f"device={device} threads={torch.get_num_threads()} model=3x256 batch={args.batch_size} fp32 "
          f"steps={args.steps} repeats={args.repeats}")
    print(f"bare model step : {b:9.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"Trainer pipeline: {t:9.1f} img/s  (runs: {', '.join(f'{x:.1f}' for x in trainer)})")
    print(f"ratio trainer/bare = {t / b:.3f}")


if __name__ == "__main__":
    main()
