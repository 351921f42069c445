"""A Vision Transformer written from scratch as a `transformers` model.

Pre-norm encoder (Dosovitskiy et al. 2020), CLS or mean pooling, stochastic depth, attention through
`transformers`' attention interface (eager, SDPA, flash/flex where installed). Copied next to the weights
on save; imports nothing of our package but the configuration, and holds no training code.

Shapes: B batch, C channels, H/W image height/width, P patch side, N = (H/P)*(W/P) patches, T = N + 1 tokens,
D hidden size, h heads, d = D / h head size, K classes.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

from .configuration_vit_scratch import ViTScratchConfig

logger = logging.get_logger(__name__)


class ViTScratchPatchEmbeddings(nn.Module):
    """(B, C, H, W) -> (B, N, D): a linear projection of each non-overlapping P x P patch."""

    def __init__(self, config: ViTScratchConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.num_patches = (config.image_size // config.patch_size) ** 2
        # A convolution whose kernel equals its stride is exactly a per-patch linear map, computed in one op.
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels; the model expects {self.num_channels}"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, N, D)


class ViTScratchEmbeddings(nn.Module):
    """Patch embeddings with a CLS token prepended and learned position embeddings added: (B, C, H, W) -> (B, T, D)."""

    def __init__(self, config: ViTScratchConfig):
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.patch_embeddings = ViTScratchPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        num_tokens = self.patch_embeddings.num_patches + 1
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_tokens, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a (height, width) input: the patch grid is resized bicubically, CLS kept."""
        grid = self.image_size // self.patch_size
        new_h, new_w = height // self.patch_size, width // self.patch_size
        if (new_h, new_w) == (grid, grid) and not torch.jit.is_tracing():
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)  # (1, D, g, g)
        patch_pos = F.interpolate(patch_pos, size=(new_h, new_w), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height, width) != (self.image_size, self.image_size):
            raise ValueError(
                f"Input image size ({height}x{width}) does not match the model ({self.image_size}x{self.image_size});"
                " pass interpolate_pos_encoding=True to run at another size"
            )
        embeddings = self.patch_embeddings(pixel_values)  # (B, N, D)
        embeddings = torch.cat((self.cls_token.expand(batch_size, -1, -1), embeddings), dim=1)  # (B, T, D)
        embeddings = embeddings + self.interpolate_pos_encoding(height, width)
        return self.dropout(embeddings)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax(QK^T * scaling) V over (B, h, T, d) inputs; returns (B, T, h, d) and the (B, h, T, T) weights."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class ViTScratchAttention(nn.Module):
    """Bidirectional multi-head self-attention."""

    def __init__(self, config: ViTScratchConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False  # read by the SDPA and flash integrations
        # Separate projections (transformers' naming): on CPU a fused QKV measured slower (its split/unbind backward
        # adds a concatenation and SDPA copies the strided slices).
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        # (B, T, D) -> (B, T, h, d) -> (B, h, T, d). The transpose after the view is what keeps each token's
        # head slices together; a bare view to (B, h, T, d) would mix tokens across heads (the bug of the
        # project this grew from).
        query, key, value = (
            proj(hidden_states).view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        implementation = self.config._attn_implementation
        if output_attentions and implementation not in ("eager", None):
            # SDPA/flash/flex cannot return the weights: this call runs eager attention (same result, slower).
            logger.warning_once(f"output_attentions=True: computing attention eagerly for these calls "
                                f"({implementation!r} cannot return attention weights)")
            implementation = "eager"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        attn_output = attn_output.reshape(batch_size, seq_len, -1)  # (B, T, h, d) -> (B, T, D)
        return self.o_proj(attn_output), attn_weights


class ViTScratchMLP(nn.Module):
    def __init__(self, config: ViTScratchConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class ViTScratchDropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `drop_prob` while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)  # one draw per sample: (B, 1, 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ViTScratchLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + DropPath(Dropout(Attn(LN(x)))), then x + DropPath(Dropout(MLP(LN(x))))."""

    def __init__(self, config: ViTScratchConfig, drop_path: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ViTScratchAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTScratchMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = ViTScratchDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(self.dropout(attn_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        hidden_states = hidden_states + self.drop_path(self.dropout(mlp_output))
        return hidden_states, attn_weights


class ViTScratchPreTrainedModel(PreTrainedModel):
    config_class = ViTScratchConfig
    config: ViTScratchConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTScratchEmbeddings", "ViTScratchLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Truncated-normal weights, zero biases, unit norms; `init.*` respects weights that were loaded."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ViTScratchEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)


class ViTScratchModel(ViTScratchPreTrainedModel):
    def __init__(self, config: ViTScratchConfig):
        super().__init__(config)
        self.embeddings = ViTScratchEmbeddings(config)
        n = config.num_hidden_layers
        drop_rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # 0 at the first block
        self.layers = nn.ModuleList([ViTScratchLayer(config, rate) for rate in drop_rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, bool(output_attentions))  # (B, T, D), (B, h, T, T)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)

        sequence_output = self.layernorm(hidden_states)  # (B, T, D)
        if self.config.pooling == "cls":
            pooled_output = sequence_output[:, 0]  # (B, D)
        else:
            pooled_output = sequence_output[:, 1:].mean(dim=1)  # (B, D)

        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None = None) -> torch.Tensor:
    """The loss for `config.problem_type`, in fp32 also under autocast; never writes `problem_type`.

    "regression": MSE (labels (B,) when num_labels == 1, else (B, K)). "multi_label_classification": BCE with logits
    on (B, K) multi-hot labels. "single_label_classification" and unset: cross-entropy for integer labels (B,),
    soft-target cross-entropy for probability labels (B, K) (mixup/cutmix/label smoothing). Unlike transformers'
    ViT, float (B, K) labels without a problem_type mean soft targets here, not multi-label.
    """
    logits = logits.float()
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1) if logits.shape[-1] == 1 else logits, labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise ValueError(
                f"soft labels must have shape {tuple(logits.shape)} (batch, num_labels), got {tuple(labels.shape)}"
            )
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"integer labels must have shape ({logits.shape[0]},) (batch,), got {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels)


class ViTScratchForImageClassification(ViTScratchPreTrainedModel):
    def __init__(self, config: ViTScratchConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTScratchModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def save_pretrained(self, *args, **kwargs):
        # transformers writes auto_map for the saved class only; the folder also loads as the backbone (AutoModel).
        if self._auto_class is not None:
            backbone = f"{__name__.rpartition('.')[2]}.{ViTScratchModel.__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": backbone}
        return super().save_pretrained(*args, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels: `(B,)` integer class indices, or `(B, K)` class probabilities (mixup/cutmix, label smoothing): mean
            (soft-target) cross-entropy. With `config.problem_type` "regression" (MSE) or
            "multi_label_classification" (BCE with logits on multi-hot labels), that loss; see `classification_loss`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)  # (B, K)
        loss = classification_loss(logits, labels, self.config.problem_type) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = ["ViTScratchForImageClassification", "ViTScratchModel", "ViTScratchPreTrainedModel"]
