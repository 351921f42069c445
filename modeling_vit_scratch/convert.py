"""transformers' `ViTForImageClassification` -> an equivalent `ViTScratchForImageClassification`.

Used to prove our model against an independent implementation, and to start from pretrained `google/vit-*`
weights that transformers loads.
"""

from .configuration_vit_scratch import ViTScratchConfig
from .modeling_vit_scratch import ViTScratchForImageClassification


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"ViTConfig.{name}={value!r}: only square sizes convert")
        value = value[0]
    return int(value)


def convert_from_transformers_vit(model) -> ViTScratchForImageClassification:
    """Return a `ViTScratchForImageClassification` computing the same logits as `model` (a transformers ViT)."""
    src = model.config
    config = ViTScratchConfig(
        image_size=_square(src.image_size, "image_size"),
        patch_size=_square(src.patch_size, "patch_size"),
        num_channels=src.num_channels,
        hidden_size=src.hidden_size,
        num_hidden_layers=src.num_hidden_layers,
        num_attention_heads=src.num_attention_heads,
        intermediate_size=src.intermediate_size,
        hidden_act=src.hidden_act,
        hidden_dropout_prob=src.hidden_dropout_prob,
        attention_probs_dropout_prob=src.attention_probs_dropout_prob,
        layer_norm_eps=src.layer_norm_eps,
        qkv_bias=src.qkv_bias,
        pooling="cls",
        initializer_range=src.initializer_range,
        id2label=dict(src.id2label),
        label2id=dict(src.label2id),
        attn_implementation=src._attn_implementation,
    )
    converted = ViTScratchForImageClassification(config)
    # Parameter names follow transformers' ViT one for one (embeddings, q/k/v/o_proj, mlp.fc1/fc2, layernorms,
    # classifier), so the state dict loads as is; strict: every tensor on either side is accounted for.
    converted.load_state_dict(model.state_dict(), strict=True)
    return converted.to(dtype=next(model.parameters()).dtype).train(model.training)
