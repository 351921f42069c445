"""An exponential moving average of the weights (timm's `ModelEmaV3` semantics), kept on the training device.

After every optimizer step: ema = decay * ema + (1 - decay) * weights, one multi-tensor `lerp_` over the floating
point parameters and buffers (a few kernels, no host sync). With `warmup` the decay ramps up as
1 - (1 + step)^(-2/3), capped at `decay`, so the average forgets the random initial weights quickly. Each process of
a multi-process launch keeps its own copy: the weights are identical on every process after each step, so are the
averages, and every process evaluates its shard of the validation set with them.
"""

import contextlib

import torch

WARMUP_POWER = 2 / 3  # timm's warmup_power (warmup_gamma 1)


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        # The model's state_dict names for its floating point tensors: the same names as model.safetensors.
        tensors = {name: t for name, t in model.state_dict(keep_vars=True).items() if t.is_floating_point()}
        self.names = list(tensors)
        self.live = [t.detach() for t in tensors.values()]  # the model's own tensors (updated by the optimizer)
        self.shadow = [t.detach().clone() for t in self.live]  # the average

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (1, 2, ...): timm's get_decay (update_after_step 0)."""
        step = max(0, step - 1)
        if step == 0:
            return 0.0  # the first update copies the weights
        if not self.warmup:
            return self.decay
        return min(self.decay, 1 - (1 + step) ** -WARMUP_POWER)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step `step`: a Python scalar weight, no tensor is read back."""
        torch._foreach_lerp_(self.shadow, self.live, 1.0 - self.decay_at(step))

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """The model's weights become the average (in place: a compiled or graph-captured model keeps its tensors)."""
        torch._foreach_copy_(self.live, self.shadow)

    @torch.no_grad()
    def load_from_model(self) -> None:
        """The average becomes the model's current weights (resume: the checkpoint's model.safetensors)."""
        torch._foreach_copy_(self.shadow, self.live)

    @contextlib.contextmanager
    def swapped_in(self):
        """Inside: the model holds the average (evaluation, a checkpoint's model.safetensors); after: its own weights
        again, bit for bit. Yields the model's own weights by name (what a checkpoint saves beside the average)."""
        with torch.no_grad():
            own = [t.clone() for t in self.live]
            torch._foreach_copy_(self.live, self.shadow)
        try:
            yield dict(zip(self.names, own, strict=True))
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, own)
