"""ViTScratch configuration. Copied next to the weights on save: imports nothing of our package."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

POOLING_CHOICES = ("cls", "mean")
HIDDEN_ACT_CHOICES = ("gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish")
_POSITIVE_INTS = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
                  "num_attention_heads", "intermediate_size")
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate")


@strict
class ViTScratchConfig(PreTrainedConfig):
    r"""
    Configuration of a [`ViTScratchModel`]. Field names follow `transformers`' `ViTConfig`; the defaults are
    sized like the older project's CIFAR-10 experiment (patch 4, width 256, 3 blocks, 4 heads, MLP 256).

    image_size: side of the square input image in pixels; a multiple of `patch_size`.
    patch_size: side of a square patch (a linear projection of patch_size**2 * num_channels pixels).
    num_channels: input channels (3 for RGB).
    hidden_size: token width; a multiple of `num_attention_heads`.
    num_hidden_layers: pre-norm encoder blocks.
    num_attention_heads: heads per attention layer.
    intermediate_size: width of the MLP inside each block.
    hidden_act: MLP activation, one of `HIDDEN_ACT_CHOICES`.
    hidden_dropout_prob: dropout on the embeddings, the attention output and the MLP output.
    attention_probs_dropout_prob: dropout on the attention probabilities.
    drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
    layer_norm_eps: epsilon of every LayerNorm.
    qkv_bias: bias on the query/key/value projections.
    pooling: `"cls"` (the CLS token) or `"mean"` (mean of the patch tokens) feeds the classifier.
    initializer_range: std of the truncated-normal initialisation.
    """

    model_type = "vit_scratch"

    image_size: int = 32
    patch_size: int = 4
    num_channels: int = 3
    hidden_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    pooling: str = "cls"
    initializer_range: float = 0.02

    def validate_architecture(self):
        """Run by `@strict` at construction (and on save): every message names the field, value and rule."""

        def fail(name, allowed):
            raise ValueError(f"ViTScratchConfig.{name}={getattr(self, name)!r} is invalid: {allowed}")

        for name in _POSITIVE_INTS:
            if getattr(self, name) <= 0:
                fail(name, "must be a positive integer")
        for name in _PROBABILITIES:
            if not 0 <= getattr(self, name) < 1:
                fail(name, "must be a probability in [0, 1)")
        for name in ("layer_norm_eps", "initializer_range"):
            if getattr(self, name) <= 0:
                fail(name, "must be a positive number")
        if self.hidden_size % self.num_attention_heads:
            fail("hidden_size", f"must be a multiple of num_attention_heads={self.num_attention_heads}")
        if self.image_size % self.patch_size:
            fail("image_size", f"must be a multiple of patch_size={self.patch_size}")
        if self.pooling not in POOLING_CHOICES:
            fail("pooling", f"allowed: {', '.join(POOLING_CHOICES)}")
        if self.hidden_act not in HIDDEN_ACT_CHOICES:
            fail("hidden_act", f"allowed: {', '.join(HIDDEN_ACT_CHOICES)}")


__all__ = ["ViTScratchConfig"]
