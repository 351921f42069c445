"""The HF `Trainer`, adapted to uint8 image batches augmented on the training device.

The datasets (`vit_scratch/storage.py`) cut a whole batch with one op, held on the device, gathered in host memory
or decoded by DataLoader workers; `ViTScratchTrainer` augments and normalises on the device, never waits for it
inside a step, and stops early (NaN/inf, SIGTERM) by raising `errors.TrainingStopped`.

It changes the Trainer through the seams transformers documents for this: `compute_loss` (augmentation),
`get_train_dataloader` / `get_eval_dataloader` / `get_test_dataloader`, `training_step`, `save_model`, `evaluate`,
`train` and callbacks. One private method is overridden, `_run_epoch`, where no public seam can act;
tests/test_trainer_contract.py fails when transformers changes what that override, or any seam, relies on.
"""

import contextlib
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm
from transformers import ProgressCallback, Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length, seed_worker

from vit_scratch.augment import BatchAugment
from vit_scratch.distributed import is_distributed
from vit_scratch.errors import NonFiniteLossError, Preempted
from vit_scratch.storage import DeviceImageDataset, StreamImageDataset, collate_batch, worker_context
from vit_scratch.training.checkpoints import (
    MANIFEST_FILE,
    TRAINING_WEIGHTS_NAME,
    ManifestWriter,
    latest_complete_checkpoint,
    write_manifest,
)
from vit_scratch.training.ema import WeightEMA
from vit_scratch.training.writes import failed_writes_end_the_run

logger = logging.getLogger("vit_scratch")

NO_DECAY_SUFFIXES = ("bias", "cls_token", "position_embeddings")


class NonFiniteLossCallback(TrainerCallback):
    """Checks the device-side non-finite flag only when the Trainer is about to log, evaluate or save, so there
    is no host sync per step, and raises before a checkpoint of a diverged model can be written."""

    def __init__(self, trainer: "ViTScratchTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.trainer.raise_if_nonfinite()

    def on_epoch_end(self, args, state, control, **kwargs):
        # save_strategy/eval_strategy "epoch" set should_save/should_evaluate here, not at the step's end.
        if control.should_log or control.should_save or control.should_evaluate:
            self.trainer.raise_if_nonfinite()


class EMACallback(TrainerCallback):
    """`training.ema_decay`: starts the average when training starts (from the checkpoint when resuming) and updates
    it after every optimizer step, on the device."""

    def __init__(self, trainer: "ViTScratchTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.start_ema()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.ema.update(state.global_step + 1)  # the Trainer counts this step only after the callback


class CheckpointSavedCallback(TrainerCallback):
    """After every checkpoint (all of its files written, on every process): its manifest is started."""

    def __init__(self, trainer: "ViTScratchTrainer"):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        self.trainer.checkpoint_saved()


def _any_process(flag: bool, group=None) -> bool:
    """True on every process when `flag` is true on any of them (a no-op without torch.distributed)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


class PreemptionCallback(TrainerCallback):
    """SIGTERM -> a checkpoint at the end of the current optimizer step, then the training loop stops.

    The signal handler only sets a flag; at every step end the flag is OR-ed across processes (one tiny CPU
    all-reduce, over gloo also when training runs on NCCL: no device sync), so that all processes stop at the
    same step and save one consistent checkpoint through the Trainer's normal save path: resuming from it is
    exactly like resuming from a periodic checkpoint. `stopped_at` is the step of that checkpoint.
    (transformers' `enable_jit_checkpoint` is not used: it waits 3 s, can save between backward and optimizer
    step, with the RNG already advanced, decides per process, and lets `train()` return as if done.)
    """

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._group = None

    def _on_sigterm(self, signum, frame):
        self.requested = True  # nothing else here: a signal handler may interrupt logging or I/O

    @contextlib.contextmanager
    def handling_sigterm(self):
        """Install the SIGTERM handler for the duration of `train()` (only the main thread can)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def on_train_begin(self, args, state, control, **kwargs):
        self.requested, self.stopped_at = False, None
        if is_distributed() and self._group is None:
            # A CPU group for the flag: the default group may be NCCL, which cannot reduce CPU tensors.
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def on_step_end(self, args, state, control, **kwargs):
        if _any_process(self.requested, self._group):
            logger.warning("SIGTERM: saving checkpoint-%d and stopping", state.global_step)
            self.requested = True
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True


def _ask_once_whether_lomo_is_installed() -> None:
    """accelerate asks importlib on every optimizer step whether the optional `lomo_optim` package is installed, a
    search of sys.path that was a large part of the Trainer's own per-step cost with a tiny model (bench/overhead.py).
    The answer cannot change during a run: cache it."""
    import accelerate.optimizer

    check = getattr(accelerate.optimizer, "is_lomo_available", None)
    if check is not None and not hasattr(check, "cache_info"):
        accelerate.optimizer.is_lomo_available = functools.cache(check)


class LabelledProgressCallback(ProgressCallback):
    """transformers' progress bars, labelled: "train", "validation" during training, and `label` (what the run is
    evaluating: the best checkpoint on validation, the test split) when it is set."""

    def __init__(self):
        super().__init__()
        self.label: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc="train")
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        # Made here with its label (then the parent only updates it): labelled after it first drew, a log that is
        # not a terminal would show an unlabelled "0%|" line before every evaluation.
        if self.prediction_bar is None and state.is_world_process_zero and has_length(eval_dataloader):
            self.prediction_bar = tqdm(total=len(eval_dataloader), leave=self.training_bar is None,
                                       dynamic_ncols=True, desc=self.label or "validation")
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)


class ViTScratchTrainer(Trainer):
    def __init__(self, *args, augment: BatchAugment, **kwargs):
        kwargs.setdefault("data_collator", collate_batch)
        super().__init__(*args, **kwargs)
        _ask_once_whether_lomo_is_installed()
        # Host batches (storage host/stream, pinned on a GPU) go to the device without waiting for it; data already
        # on the device is not copied at all.
        self.accelerator.dataloader_config.non_blocking = True
        device = self.args.device
        self.augment = augment.to(device)
        # One graph for the whole augmentation (dozens of small elementwise ops per batch), fixed shapes like the
        # training batches; compiled lazily on the first batch, like the model.
        self._train_augment = torch.compile(self.augment, dynamic=False) if self.args.torch_compile else self.augment
        self._flops_per_input = None
        self._writing: Path | None = None  # the checkpoint folder being written, until its on_save
        self._manifest: ManifestWriter | None = None  # the newest checkpoint's, being written
        self.label_smoother = None  # folded into the augmentation's soft targets (see vit_scratch/augment.py)
        self._first_nonfinite_step = torch.tensor(-1, device=device)
        self.add_callback(NonFiniteLossCallback(self))
        self.preemption = PreemptionCallback()
        self.add_callback(self.preemption)
        self.add_callback(CheckpointSavedCallback(self))
        self.ema: WeightEMA | None = None  # during train() with training.ema_decay; then the model holds the average
        self._resume_from: str | None = None
        if getattr(self.args, "ema_decay", None) is not None:
            self.add_callback(EMACallback(self))
        self._progress = None
        if any(type(c) is ProgressCallback for c in self.callback_handler.callbacks):  # not in notebooks, or no tqdm
            self.remove_callback(ProgressCallback)
            self._progress = LabelledProgressCallback()
            self.add_callback(self._progress)

    @property
    def progress_label(self) -> str | None:
        """The label of the next evaluation's progress bar (None: "validation")."""
        return self._progress.label if self._progress else None

    @progress_label.setter
    def progress_label(self, label: str | None) -> None:
        if self._progress:
            self._progress.label = label

    # ---- the run

    def train(self, resume_from_checkpoint: str | None = None, *args, **kwargs):
        self._resume_from, self._writing = resume_from_checkpoint, None
        with self.preemption.handling_sigterm():
            try:
                result = super().train(resume_from_checkpoint, *args, **kwargs)
            except BaseException:
                if self._manifest is not None:  # the checkpoint it completes is the one to resume from
                    self._manifest.thread.join()
                if self._writing is not None:  # a checkpoint's file failed to be written: say which, and why
                    with failed_writes_end_the_run(self.args.output_dir, into=self._writing):
                        raise
                raise
            self.finish_manifest()
        step = self.preemption.stopped_at
        if step is not None:  # no final model, card or push: the run is not finished
            checkpoint = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            raise Preempted(f"SIGTERM: saved {checkpoint} at step {step} and stopped; continue with --resume")
        if self.ema is not None:
            # From here on the model is the average: the best checkpoint's (load_best_model_at_end loaded its
            # model.safetensors, which holds the average), else the last step's.
            if not (self.args.load_best_model_at_end and self.state.best_model_checkpoint):
                self.ema.copy_to_model()
            self.ema = None
        return result

    def start_ema(self) -> None:
        """A fresh average of the model's weights; resuming, the checkpoint's: the Trainer has loaded its
        model.safetensors (the average) into the model, and the weights training goes on from are beside it."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        self.ema = WeightEMA(model, self.args.ema_decay, self.args.ema_warmup)
        if self._resume_from is not None:
            weights = load_file(Path(self._resume_from) / TRAINING_WEIGHTS_NAME, device=str(self.args.device))
            with torch.no_grad():
                torch._foreach_copy_(self.ema.live, [weights[name] for name in self.ema.names])

    def _run_epoch(self, *args, **kwargs):
        # Private, as no public seam acts before an epoch's first step: resumed from the final checkpoint (a run stopped
        # during its final evaluation or save, or preempted at its last step), the Trainer would enter the epoch and
        # train one step past max_steps whenever max_steps is not a multiple of the epoch length.
        if self.state.global_step >= self.state.max_steps > 0:
            self.control.should_training_stop = True
            return
        return super()._run_epoch(*args, **kwargs)

    def evaluate(self, eval_dataset=None, *args, **kwargs):
        with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():  # during training
            return super().evaluate(eval_dataset, *args, **kwargs)

    # ---- a step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss on a batch of uint8 images: augmented on the device while training (its soft targets
        carry mixup/cutmix and label smoothing), only normalised in evaluation."""
        return super().compute_loss(model, self.model_inputs(inputs, training=model.training), return_outputs,
                                    num_items_in_batch)

    def model_inputs(self, batch: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        """A batch as the model takes it: uint8 images [B, C, H, W] -> augmented (training) or normalised float
        pixels; labels [B] -> soft targets [B, num_labels] when training. Float images (a user's own dataset of
        model inputs) pass as they are."""
        images, labels = batch["pixel_values"], batch["labels"]
        if images.dtype != torch.uint8:
            return batch
        if training:
            pixel_values, labels = self._train_augment(images, labels)
        else:
            pixel_values = self.augment.normalize(images)
            if self.args.torch_compile:  # one evaluation graph for every batch size: no recompile on the last batch
                torch._dynamo.mark_dynamic(pixel_values, 0)
        return {"pixel_values": pixel_values, "labels": labels}

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Remember the first step whose loss is not finite, on the device: no host sync here.
        bad = ~torch.isfinite(loss.detach()) & (self._first_nonfinite_step < 0)
        self._first_nonfinite_step = torch.where(bad, self.state.global_step + 1, self._first_nonfinite_step)
        return loss

    def raise_if_nonfinite(self):
        step = self._first_nonfinite_step
        if is_distributed():
            # Every process must stop at the same point (the loss is per process; one bad rank poisons all
            # weights through the gradient all-reduce): take the earliest bad step of any process.
            never = torch.iinfo(torch.int64).max
            step = torch.where(step < 0, never, step).to(torch.int64)
            dist.all_reduce(step, op=dist.ReduceOp.MIN)
            step = torch.where(step == never, -1, step)
        step = int(step)
        if step >= 0:
            self.finish_manifest()
            last = latest_complete_checkpoint(self.args.output_dir)
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
            raise NonFiniteLossError(
                f"training loss became NaN or inf at step {step}; stopped without saving it ({kept}). "
                "Lower training.learning_rate, raise training.warmup_steps or set training.max_grad_norm."
            )

    def floating_point_ops(self, inputs: dict[str, torch.Tensor]) -> int:
        """6 x parameters (without embeddings) x tokens per batch, for `total_flos`. transformers recounts the
        parameters on every step (a walk over all modules) and multiplies by the pixel count; count once, use tokens."""
        if self._flops_per_input is None:
            model = self.accelerator.unwrap_model(self.model)
            config = model.config
            tokens = (config.image_size // config.patch_size) ** 2 + 1
            self._flops_per_input = 6 * model.num_parameters(exclude_embeddings=True) * tokens
        return self._flops_per_input * len(inputs["pixel_values"])

    def get_decay_parameter_names(self, model) -> list[str]:
        return [n for n in super().get_decay_parameter_names(model) if not n.endswith(NO_DECAY_SUFFIXES)]

    # ---- data

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._dataloader(self.train_dataset, self._train_batch_size, training=True)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        if isinstance(eval_dataset, str):  # a name in a dict of eval datasets
            eval_dataset = self.eval_dataset[eval_dataset]
        eval_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        return self._dataloader(eval_dataset, self.args.eval_batch_size, training=False)

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self._dataloader(test_dataset, self.args.eval_batch_size, training=False)

    def _dataloader(self, dataset, batch_size: int, training: bool) -> DataLoader:
        """A DataLoader of `dataset` prepared by accelerate (sharded across processes, batches sent to the device).

        Training drops its last partial batch (the same shapes every step, no tiny last step); evaluation never does
        (every image counts). Only streamed data has work for worker processes (decoding), forked unless the config
        says otherwise (storage.worker_context says why), and only it comes in pageable memory that a GPU run pins
        (HostImageDataset pins its own buffers)."""
        args = self.args
        self._on_device(dataset)
        stream = isinstance(dataset, StreamImageDataset)
        workers = args.dataloader_num_workers if stream else 0
        sequential = not training or args.train_sampling_strategy == "sequential"
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=SequentialSampler(dataset) if sequential else RandomSampler(dataset),
            drop_last=training,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=stream and args.device.type == "cuda",
            multiprocessing_context=worker_context(args.dataloader_multiprocessing_context) if workers else None,
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index) if training else None,
            in_order=args.dataloader_in_order,
        )
        return self.accelerator.prepare(loader)

    def _on_device(self, dataset):
        """A DeviceImageDataset moves to the training device (once; a no-op after); other datasets pass through."""
        if isinstance(dataset, DeviceImageDataset):
            dataset.to(self.args.device)
        return dataset

    # ---- saving

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The final model into `output_dir` (staged, then renamed in, with its manifest), or a checkpoint: the Trainer
        saves a checkpoint's model first, then its optimizer, RNG and trainer state, then calls `on_save`
        (`checkpoint_saved`). With EMA, a checkpoint's model.safetensors is the average (what its evaluation measured,
        what load_best_model_at_end and a push take); the weights training goes on from are saved first, beside it."""
        target = Path(output_dir if output_dir is not None else self.args.output_dir)
        if target.resolve() == Path(self.args.output_dir).resolve():
            self._save_final_model(target)  # pushed once, after the report (run.py), never before the card exists
            return
        if not (target.parent.resolve() == Path(self.args.output_dir).resolve()
                and target.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-")):
            super().save_model(str(target), _internal_call)  # another folder: a plain save, nothing of a checkpoint
            return
        self.finish_manifest()  # the previous checkpoint's, before this save's rotation may remove its folder
        self._writing = target
        if self.ema is None:
            super().save_model(str(target), _internal_call)
        else:
            with self.ema.swapped_in() as own_weights:
                if self.args.should_save:
                    target.mkdir(parents=True, exist_ok=True)
                    save_file({name: t.contiguous() for name, t in own_weights.items()},
                              str(target / TRAINING_WEIGHTS_NAME), metadata={"format": "pt"})
                super().save_model(str(target), _internal_call)
        if self.args.push_to_hub and self.is_world_process_zero():
            # A push from a checkpoint uploads output_dir, into which transformers copies the weights and config but
            # not the model's code: without it an intermediate Hub revision would not load with trust_remote_code.
            for code_file in target.glob("*.py"):
                shutil.copy(code_file, Path(self.args.output_dir) / code_file.name)

    def checkpoint_saved(self) -> None:
        """Every process has written its part of the checkpoint (its RNG state): the manifest comes last, over every
        file then in the folder, so that a file added above is covered and a checkpoint without one is incomplete.
        Its checksums run beside the next steps (finish_manifest waits)."""
        self.accelerator.wait_for_everyone()
        folder, self._writing = self._writing, None
        if folder is not None and self.args.should_save:
            self._manifest = ManifestWriter(folder)

    def finish_manifest(self) -> None:
        """Wait for the last checkpoint's manifest; a failed write of it ends the run like any other."""
        writer, self._manifest = self._manifest, None
        if writer is not None:
            with failed_writes_end_the_run(self.args.output_dir, into=writer.folder):
                writer.finish()

    def _save_final_model(self, target: Path) -> None:
        """Written into a staging folder, then renamed in (the weights last), then its manifest: a run that dies
        here leaves the previous model or none, never a half-written one."""
        if not self.args.should_save:
            return super().save_model(str(target), _internal_call=True)  # a rank that writes nothing
        with failed_writes_end_the_run(self.args.output_dir):
            target.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target, prefix=".saving-"))
        try:
            with failed_writes_end_the_run(self.args.output_dir, into=staging, shown_in=target):
                super().save_model(str(staging), _internal_call=True)
                saved = sorted(staging.iterdir(), key=lambda p: p.name.startswith("model.safetensors"))
                files = [path.name for path in saved if path.is_file() and path.name != TRAINING_ARGS_NAME]
                (target / MANIFEST_FILE).unlink(missing_ok=True)  # the old model's, if any, no longer applies
                for path in saved:
                    os.replace(path, target / path.name)  # the weights (and a sharded index) last
                # What loading the model needs (weights, config, code, image processor); training_args.bin (not
                # read to load) and files added to the folder later (card, results, an export) are not in it.
                write_manifest(target, files=files)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def create_model_card(self, *args, **kwargs) -> None:
        """Our card is written by `reporting.card.write_model_card`; the automatic one would overwrite it."""
