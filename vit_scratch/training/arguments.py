"""`TrainingArguments` plus this project's training keys (the HF idiom, like `Seq2SeqTrainingArguments`): the key
snapshot, `--help` and the checks take them like any other `training.*` key."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class ViTScratchTrainingArguments(TrainingArguments):
    ema_decay: float | None = field(default=None, metadata={
        "help": "keep an exponential moving average of the weights, updated after every optimizer step with this "
                "decay (e.g. 0.999; timm's ModelEmaV3); validation, the best-checkpoint choice, the test evaluation "
                "and the saved and pushed model then use the averaged weights. null = off"})
    ema_warmup: bool = field(default=False, metadata={
        "help": "with ema_decay: ramp the decay up as 1 - (1 + step)^(-2/3), capped at ema_decay (timm's warm-up), "
                "so that the average forgets the random initial weights quickly"})

    def __post_init__(self):
        super().__post_init__()
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.ema_warmup and self.ema_decay is None:
            raise ValueError("ema_warmup needs ema_decay (the decay it ramps up to)")
