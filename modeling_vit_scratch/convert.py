"""transformers' `ViTForImageClassification` -> an equivalent `ViTScratchForImageClassification`.

Used to prove our model against an independent implementation, and to start from pretrained `google/vit-*`
weights that transformers loads. Its pooler, if any, is unused by ViT classification and is dropped.
"""

import torch

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
    sd = model.state_dict()
    new = {
        "vit.embeddings.cls_token": sd["vit.embeddings.cls_token"],
        "vit.embeddings.position_embeddings": sd["vit.embeddings.position_embeddings"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
        "vit.layernorm.weight": sd["vit.layernorm.weight"],
        "vit.layernorm.bias": sd["vit.layernorm.bias"],
        "classifier.weight": sd["classifier.weight"],
        "classifier.bias": sd["classifier.bias"],
    }
    for i in range(src.num_hidden_layers):
        layer = f"vit.layers.{i}."  # same prefix on both sides; q, k, v fuse into one projection
        for p in ("weight", "bias") if src.qkv_bias else ("weight",):
            new[f"{layer}attention.qkv.{p}"] = torch.cat([sd[f"{layer}attention.{n}_proj.{p}"] for n in "qkv"], dim=0)
        for ours, theirs in (("attention.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
                             ("layernorm_before", "layernorm_before"), ("layernorm_after", "layernorm_after")):
            for p in ("weight", "bias"):
                new[f"{layer}{ours}.{p}"] = sd[f"{layer}{theirs}.{p}"]

    converted = ViTScratchForImageClassification(config)
    converted.load_state_dict(new, strict=True)  # strict: every parameter of ours is accounted for
    return converted.to(dtype=next(model.parameters()).dtype).train(model.training)
