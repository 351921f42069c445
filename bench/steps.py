"""One training step, timed three ways on the same model, data, augmentation and optimizer settings.

Shared by bench/overhead.py (per-step overhead on CPU, tiny model) and bench/gpu_report.py (the GPU's view).

- `model_step_seconds`: the model alone: one fixed, already normalised batch; forward (autocast as configured),
  backward, gradient clipping, the optimizer and the schedule. No data, no augmentation.
- `bare_loop_seconds`: the same plus what any pipeline must do: gather a random batch of the device-resident uint8
  images, augment and normalise it with the run's `BatchAugment`. A plain PyTorch loop: the floor.
- `trainer_seconds`: the real path, `ViTScratchTrainer.train()` with the same settings (sampler, batch cut,
  augmentation hook, accelerate, clipping, optimizer, scheduler, callbacks, logging every `logging_steps`).
Each returns seconds per step over `steps` steps after `warmup` steps (compilation happens in the warm-up). On CUDA:
the timed span's length / steps, the clock synchronised at both ends and nowhere inside (the host runs ahead of
the device, so a single step's host time means nothing). On CPU: the median of the steps' own durations (each
from the end of one step to the end of the next), which bursts of load on a shared machine do not move.

`bare_train` runs a whole recipe through that bare loop (no Trainer) and `evaluate` scores the result: what
bench/trainer_vs_loop.py and bench/sweep.py compare the Trainer path with, in accuracy.

`SyncTrap` is a TrainerCallback that fails the run on any host<->device synchronisation inside a window of steps:
on CUDA with `torch.cuda.set_sync_debug_mode("error")`; on CPU, where nothing ever waits, with a stand-in that raises
on `.item()`, `.tolist()`, `.cpu()`, `.numpy()` and `bool()/int()/float()` of any tensor created inside the window
(the calls that would wait for a GPU), and on `torch.tensor(...)` (a blocking copy from the host on a GPU).
"""

import contextlib
import statistics
import tempfile
import time

import torch
from torch.overrides import TorchFunctionMode
from transformers import TrainerCallback, get_scheduler, set_seed

from modeling_vit_scratch import ViTScratchForImageClassification
from vit_scratch.augment import BatchAugment
from vit_scratch.config.schema import apply_overrides, build_experiment
from vit_scratch.data import ImageData, ImageSplit
from vit_scratch.training.ema import WeightEMA
from vit_scratch.training.run import planned_steps, with_labels
from vit_scratch.training.trainer import NO_DECAY_SUFFIXES, DeviceImageDataset, ViTScratchTrainer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32}


def experiment_for(config: dict, batch_size: int, steps: int, device: str, overrides: list[tuple[str, str]] = ()):
    """The config as `train.py` would run it, trimmed to `steps` steps of `batch_size`, with nothing saved."""
    with tempfile.TemporaryDirectory() as out:
        fixed = [("training.output_dir", out), ("training.per_device_train_batch_size", str(batch_size)),
                 ("training.max_steps", str(steps)), ("training.eval_strategy", "no"),
                 ("training.save_strategy", "no"), ("training.load_best_model_at_end", "false"),
                 ("training.disable_tqdm", "true"), ("training.report_to", "none")]
        if device == "cpu":
            fixed += [("training.use_cpu", "true"), ("training.bf16", "false")]
        return build_experiment(apply_overrides(config, fixed + list(overrides)))


def random_split(n: int, image_size: int = 32, channels: int = 3, seed: int = 0) -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    return ImageSplit(images=torch.randint(0, 256, (n, channels, image_size, image_size), dtype=torch.uint8,
                                           generator=generator),
                      labels=torch.randint(0, 10, (n,), generator=generator))


def build_model(experiment, device) -> ViTScratchForImageClassification:
    torch.manual_seed(0)
    config = with_labels(experiment.model, [str(i) for i in range(10)])
    return ViTScratchForImageClassification(config).to(device).train()


def build_augment(experiment, device) -> BatchAugment:
    return BatchAugment(experiment.dataset.augmentation, MEAN, STD, 10,
                        label_smoothing=experiment.training.label_smoothing_factor).to(device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class _PlainStep:
    """forward (+ autocast) -> backward -> clip -> optimizer -> schedule -> zero_grad, as the Trainer sets them."""

    def __init__(self, experiment, model, steps: int):
        args = experiment.training
        self.model = torch.compile(model, backend=args.torch_compile_backend or "inductor",
                                   mode=args.torch_compile_mode) if args.torch_compile else model
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(NO_DECAY_SUFFIXES)]
        rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(NO_DECAY_SUFFIXES))]
        groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        fused = args.optim == "adamw_torch_fused"
        self.optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                           eps=args.adam_epsilon, fused=fused or None)
        self.scheduler = get_scheduler(args.lr_scheduler_type, self.optimizer,
                                       num_warmup_steps=args.get_warmup_steps(steps), num_training_steps=steps)
        self.max_grad_norm = args.max_grad_norm
        device_type = next(model.parameters()).device.type
        self.autocast = ((lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if args.bf16
                         else contextlib.nullcontext)

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimizer step; returns the loss, detached and still on the device (reading it would sync)."""
        with self.autocast():
            loss = self.model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def _per_step(stamps: list[float], device) -> float:
    """Seconds per step from the times at which steps ended (stamps[0]: the end of the warm-up)."""
    if torch.device(device).type == "cuda":
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def _timed(step, steps: int, warmup: int, device) -> float:
    for i in range(warmup):
        step(i)
    _sync(device)
    stamps = [time.perf_counter()]
    for i in range(warmup, warmup + steps):
        step(i)
        if i == warmup + steps - 1:
            _sync(device)
        stamps.append(time.perf_counter())
    return _per_step(stamps, device)


def model_step_seconds(experiment, steps: int, warmup: int, device) -> float:
    """The model alone on one fixed, normalised batch."""
    b = experiment.training.per_device_train_batch_size
    model = build_model(experiment, device)
    plain = _PlainStep(experiment, model, warmup + steps)
    config = model.config
    pixels = torch.randn(b, config.num_channels, config.image_size, config.image_size, device=device)
    augment = build_augment(experiment, device)
    _, labels = augment(torch.zeros(b, config.num_channels, config.image_size, config.image_size, dtype=torch.uint8,
                                    device=device), torch.randint(0, 10, (b,), device=device))
    return _timed(lambda i: plain(pixels, labels), steps, warmup, device)


def bare_loop_seconds(experiment, split: ImageSplit, steps: int, warmup: int, device) -> float:
    """Random batches gathered from device-resident uint8 data, augmented as the run would, then the model step."""
    return _timed(_bare_step(experiment, split, warmup + steps, device), steps, warmup, device)


def _bare_step(experiment, split: ImageSplit, total_steps: int, device):
    """One step of the bare loop as a function of the step index (its own model, optimizer and data copy)."""
    b = experiment.training.per_device_train_batch_size
    model = build_model(experiment, device)
    plain = _PlainStep(experiment, model, total_steps)
    augment = build_augment(experiment, device)
    augment_fn = torch.compile(augment, dynamic=False) if experiment.training.torch_compile else augment
    images, labels = split.images.to(device), split.labels.to(device)
    order = torch.randperm(len(labels), device=device)
    batches = len(labels) // b

    def step(i: int) -> None:
        index = order[(i % batches) * b:][:b]
        pixel_values, targets = augment_fn(images[index], labels[index])
        plain(pixel_values, targets)

    return step


def bare_train(experiment, data: ImageData, device, should_stop=lambda: False) -> tuple[torch.nn.Module, dict]:
    """The experiment's whole recipe as a plain PyTorch loop, no Trainer: the model seeded and built as run.py builds
    it, the data on the device, a fresh random order every epoch (full batches only), the run's `BatchAugment`
    (compiled under torch_compile, like the Trainer's), `_PlainStep`'s optimizer, schedule and clipping, and the
    average of the weights with training.ema_decay.

    -> (the trained model in eval mode, {"steps": steps run, "final_loss": mean loss of the last `logging_steps`
    steps}). `should_stop()` is asked after every step (a wall-clock budget); the loss is read once, at the end.
    """
    args = experiment.training
    b = args.per_device_train_batch_size
    set_seed(args.seed)
    config = with_labels(experiment.model, data.class_names)
    model = ViTScratchForImageClassification(config).to(device).train()
    steps = planned_steps(args, len(data.train))[1]  # as the Trainer counts them
    plain = _PlainStep(experiment, model, steps)
    augment = BatchAugment(experiment.dataset.augmentation, data.mean, data.std, config.num_labels,
                           label_smoothing=args.label_smoothing_factor).to(device)
    augment_fn = torch.compile(augment, dynamic=False) if args.torch_compile else augment
    ema = WeightEMA(model, args.ema_decay, args.ema_warmup) if args.ema_decay is not None else None
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    per_epoch = len(labels) // b
    window = max(1, min(args.logging_steps if args.logging_steps >= 1 else 1, steps))
    losses = torch.zeros(window, device=device)
    step = 0
    while step < steps and not (step and should_stop()):
        if step % per_epoch == 0:
            order = torch.randperm(len(labels), device=device)
        index = order[(step % per_epoch) * b:][:b]
        pixel_values, targets = augment_fn(images[index], labels[index])
        losses[step % window] = plain(pixel_values, targets)
        step += 1
        if ema is not None:
            ema.update(step)
    if ema is not None:  # the model the Trainer path would save: the average
        ema.copy_to_model()
    filled = min(step, window)
    return model.eval(), {"steps": step, "final_loss": float(losses[:filled].mean()) if filled else None}


@torch.no_grad()
def evaluate(model, augment: BatchAugment, split: ImageSplit, batch_size: int, bf16: bool) -> dict:
    """{"accuracy", "loss"} of `model` on a split, normalised as evaluation does (no augmentation)."""
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    correct, loss = torch.zeros((), device=device), torch.zeros((), device=device)
    for start in range(0, len(split), batch_size):
        images = split.images[start:start + batch_size].to(device)
        labels = split.labels[start:start + batch_size].to(device)
        with autocast:
            out = model(pixel_values=augment.normalize(images), labels=labels)
        correct += (out.logits.argmax(-1) == labels).sum()
        loss += out.loss.float() * len(labels)
    return {"accuracy": correct.item() / len(split), "loss": loss.item() / len(split)}


class _StepClock(TrainerCallback):
    def __init__(self, warmup: int, device):
        self.warmup, self.device, self.stamps = warmup, device, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.warmup:
            if state.global_step in (self.warmup, state.max_steps):
                _sync(self.device)
            self.stamps.append(time.perf_counter())


def trainer_seconds(experiment, split: ImageSplit, steps: int, warmup: int, device, callbacks=()) -> float:
    """`ViTScratchTrainer.train()` over `split` for warmup + steps steps (experiment_for's max_steps)."""
    assert experiment.training.max_steps == warmup + steps, "build the experiment with max_steps = warmup + steps"
    clock = _StepClock(warmup, device)
    try:
        _train(experiment, split, [clock, *callbacks])
    finally:  # an exception skips on_train_end: never leave a trap switched on
        for callback in callbacks:
            if isinstance(callback, SyncTrap):
                callback.close()
    return _per_step(clock.stamps, device)


def _train(experiment, split: ImageSplit, callbacks: list) -> None:
    """ViTScratchTrainer.train() over `split` with the experiment's settings, writing into a temporary folder."""
    with tempfile.TemporaryDirectory() as out:
        experiment.training.output_dir = out
        ViTScratchTrainer(model=build_model(experiment, "cpu"), args=experiment.training,
                          train_dataset=DeviceImageDataset(split), augment=build_augment(experiment, "cpu"),
                          callbacks=callbacks).train()


class _Interleave(TrainerCallback):
    """After each Trainer step, one bare step: the two alternate, so a drifting machine load hits both alike."""

    def __init__(self, bare_step, warmup: int):
        self.bare_step, self.warmup, self.bare, self.trainer, self.last = bare_step, warmup, [], [], None

    def on_step_end(self, args, state, control, **kwargs):
        start = time.perf_counter()
        self.bare_step(state.global_step)
        end = time.perf_counter()
        if state.global_step > self.warmup:
            self.bare.append(end - start)
            self.trainer.append(start - self.last)  # end of the last bare step -> start of this one: a Trainer step
        self.last = end


def interleaved_seconds(experiment, split: ImageSplit, steps: int, warmup: int) -> tuple[float, float]:
    """(bare loop, Trainer) seconds per step on CPU, alternating step by step in one run: medians of each."""
    interleave = _Interleave(_bare_step(experiment, split, warmup + steps + 1, "cpu"), warmup)
    _train(experiment, split, [interleave])
    return statistics.median(interleave.bare), statistics.median(interleave.trainer)


class SyncError(RuntimeError):
    pass


class _HostReadTrap(TorchFunctionMode):
    """CPU stand-in for CUDA's sync debug mode: reading a value of a tensor made while the trap is on raises."""

    READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
    COPIES_IN = {"tensor"}  # torch.tensor(python data, device=cuda) is a blocking host-to-device copy

    def __init__(self):
        super().__init__()
        self.made: set[int] = set()  # ids of tensors created under the trap (ids of live tensors are unique)
        self._keep = []  # ...so keep them alive while the trap is on

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS and args and isinstance(args[0], torch.Tensor) and id(args[0]) in self.made:
            raise SyncError(f"{name} on a tensor made inside the training step (shape {tuple(args[0].shape)}): "
                            "on a GPU this waits for the device")
        if name in self.COPIES_IN:
            raise SyncError(f"torch.{name}(...) inside the training step: on a GPU, a blocking copy from the host")
        out = func(*args, **(kwargs or {}))
        in_place = name.endswith("_") and not name.startswith("__")  # add_ returns its (older) input
        if isinstance(out, torch.Tensor) and not in_place:
            self.made.add(id(out))
            self._keep.append(out)
        return out


class SyncTrap(TrainerCallback):
    """Fails the run on a host<->device sync between the end of step `first` and the end of step `last`."""

    def __init__(self, first: int, last: int, device):
        self.first, self.last, self.device = first, last, torch.device(device)
        self.trap, self.checked_steps = None, 0

    def _on(self):
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        else:
            self.trap = _HostReadTrap()
            self.trap.__enter__()

    def close(self):
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        elif self.trap is not None:
            self.trap.__exit__(None, None, None)
            self.trap = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.first:
            _sync(self.device)
            self._on()
        elif self.first < state.global_step <= self.last:
            self.checked_steps += 1
            if state.global_step == self.last:
                self.close()

    def on_train_end(self, args, state, control, **kwargs):
        self.close()
