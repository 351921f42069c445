"""The HF `Trainer`, adapted to images that live on the training device.

- `DeviceImageDataset` holds a split as uint8 tensors and cuts a whole batch with one indexing op
  (`__getitems__`), so the Trainer's sampler, accelerate's per-process sharding and resume-skipping all
  still work, but no per-image Python runs and no worker processes are needed.
- `ViTScratchTrainer._prepare_inputs` turns a uint8 batch into model inputs on the device: augmentation and
  normalisation while training, normalisation alone while evaluating.
- No weight decay on biases, norms, the CLS token and the position embeddings.
- Label smoothing is folded into the soft targets of the augmentation (the Trainer's own `LabelSmoother`
  assumes integer labels, which mixup/cutmix replace), so evaluation losses are plain cross-entropy.
- Every Hub push carries the model's code files; the model card is ours (`report.py`), never the automatic one.
- A non-finite loss stops training, naming the step, before any checkpoint of it is written.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .augment import BatchAugment
from .data import ImageSplit

NO_DECAY_SUFFIXES = ("bias", "cls_token", "position_embeddings")


class DeviceImageDataset(torch.utils.data.Dataset):
    """A split as uint8 images (N, C, H, W) and int64 labels (N,), on one device."""

    def __init__(self, split: ImageSplit):
        self.images, self.labels = split.images, split.labels

    def to(self, device: torch.device) -> "DeviceImageDataset":
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one gather: (B, C, H, W) uint8 and (B,) labels, on the dataset's device."""
        index = torch.as_tensor(indices, device=self.labels.device)
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`__getitems__` already returns the batch; nothing to stack."""
    return batch


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteLossCallback(TrainerCallback):
    """Checks the device-side non-finite flag only when the Trainer is about to log, evaluate or save, so there
    is no host sync per step, and raises before a checkpoint of a diverged model can be written."""

    def __init__(self, trainer: "ViTScratchTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.trainer.raise_if_nonfinite()


class ViTScratchTrainer(Trainer):
    def __init__(self, *args, augment: BatchAugment, **kwargs):
        kwargs.setdefault("data_collator", collate_batch)
        super().__init__(*args, **kwargs)
        device = self.args.device
        self.augment = augment.to(device)
        for dataset in (self.train_dataset, *self._eval_datasets()):
            if isinstance(dataset, DeviceImageDataset):
                dataset.to(device)
        self.label_smoother = None  # folded into the augmentation's soft targets (see the module docstring)
        self._first_nonfinite_step = torch.tensor(-1, device=device)
        self.add_callback(NonFiniteLossCallback(self))

    def _eval_datasets(self) -> list:
        if isinstance(self.eval_dataset, dict):
            return list(self.eval_dataset.values())
        return [self.eval_dataset] if self.eval_dataset is not None else []

    def _prepare_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = super()._prepare_inputs(inputs)
        images, labels = inputs["pixel_values"], inputs["labels"]
        if images.dtype != torch.uint8:  # already model inputs (e.g. a user-supplied float dataset)
            return inputs
        if self.model.training:
            pixel_values, labels = self.augment(images, labels)
        else:
            pixel_values = self.augment.normalize(images)
        return {"pixel_values": pixel_values, "labels": labels}

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Remember the first step whose loss is not finite, on the device: no host sync here.
        bad = ~torch.isfinite(loss.detach()) & (self._first_nonfinite_step < 0)
        self._first_nonfinite_step = torch.where(bad, self.state.global_step + 1, self._first_nonfinite_step)
        return loss

    def raise_if_nonfinite(self):
        step = int(self._first_nonfinite_step)
        if step >= 0:
            last = latest_complete_checkpoint(self.args.output_dir)
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
            raise NonFiniteLossError(
                f"training loss became NaN or inf at step {step}; stopped without saving it ({kept}). "
                "Lower training.learning_rate, raise training.warmup_steps or set training.max_grad_norm."
            )

    def get_decay_parameter_names(self, model) -> list[str]:
        return [n for n in super().get_decay_parameter_names(model) if not n.endswith(NO_DECAY_SUFFIXES)]

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # transformers copies weights and config but not custom code: without these files an intermediate Hub
        # revision would not load with trust_remote_code=True.
        if self.is_world_process_zero():
            for code_file in Path(checkpoint_folder).glob("*.py"):
                shutil.copy(code_file, Path(self.args.output_dir) / code_file.name)
        super()._push_from_checkpoint(checkpoint_folder)

    def create_model_card(self, *args, **kwargs) -> None:
        """Our card is written by `report.write_model_card`; the automatic one would overwrite it."""


def is_complete_checkpoint(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last, non-atomically: a checkpoint is complete when that file parses
    and the weights' safetensors header reads."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
        with safe_open(folder / "model.safetensors", framework="pt") as weights:
            weights.keys()
    except Exception:  # missing or truncated files; safetensors raises its own SafetensorError
        return False
    return True


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-numbered complete `checkpoint-N` folder, skipping any that was cut off mid-write."""
    folders = [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if is_complete_checkpoint(folder):
            return folder
    return None
