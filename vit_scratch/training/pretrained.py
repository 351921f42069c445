"""Start a run from existing weights (`model.pretrained`): a saved ViTScratch folder or Hub id, or a transformers ViT
(`model_type` "vit", converted by `convert_from_transformers_vit`).

The architecture comes from the checkpoint: a `model` key of the config that names another architecture
(`hidden_size`, `patch_size`, ...) is refused, naming both values. What may differ from the checkpoint:
- the classes: the data's classes replace the checkpoint's. Another set of classes (other names, count or order)
  gets a new classifier, initialised as a fresh model's (transformers' `ignore_mismatched_sizes` semantics), logged.
- `image_size` (the checkpoint's unless the config sets it): the position embeddings of the patch grid are resampled
  bicubically to the new grid, CLS kept, by the model's own `interpolate_pos_encoding`, once, so that the run trains
  at one fixed size (e.g. a 224-px ViT fine-tuned on 32-px CIFAR-10).
- dropout, drop path, `initializer_range`, `attn_implementation`: the config's values when it sets them.
Normalisation: the checkpoint's image processor mean/std (what its weights learned with) replace the training data's.
"""

import logging
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoImageProcessor, ViTForImageClassification

from modeling_vit_scratch.configuration_vit_scratch import ViTScratchConfig
from modeling_vit_scratch.convert import convert_from_transformers_vit
from modeling_vit_scratch.modeling_vit_scratch import ViTScratchForImageClassification
from vit_scratch.config.schema import model_config
from vit_scratch.errors import ConfigError
from vit_scratch.training.checkpoints import local_source_problem

logger = logging.getLogger("vit_scratch")

# ViTScratchConfig fields that shape the weights: always the checkpoint's.
ARCHITECTURE = ("patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "qkv_bias", "layer_norm_eps", "pooling")
HEAD = ("classifier.weight", "classifier.bias")


@dataclass
class Pretrained:
    source: str
    model: ViTScratchForImageClassification  # the checkpoint, as loaded (a transformers ViT converted)
    config: ViTScratchConfig  # the run's model config: the checkpoint's architecture, the run's other values
    has_head: bool  # the checkpoint holds a classifier (a backbone-only checkpoint does not)
    mean: tuple[float, ...] | None  # its image processor's normalisation, when it has one
    std: tuple[float, ...] | None

    def build(self, config: ViTScratchConfig) -> ViTScratchForImageClassification:
        """A model for `config` (self.config with the data's id2label) holding the checkpoint's weights; seed first:
        a new classifier is drawn here."""
        model = ViTScratchForImageClassification(config)
        state = self.model.state_dict()
        old_grid = self.model.config.image_size // self.model.config.patch_size
        new_grid = config.image_size // config.patch_size
        if new_grid != old_grid:
            with torch.no_grad():
                state["vit.embeddings.position_embeddings"] = self.model.vit.embeddings.interpolate_pos_encoding(
                    config.image_size, config.image_size)
            logger.info("model.pretrained: position embeddings resampled from a %dx%d to a %dx%d patch grid "
                        "(image_size %d -> %d)", old_grid, old_grid, new_grid, new_grid,
                        self.model.config.image_size, config.image_size)
        old_classes = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        new_classes = [config.id2label[i] for i in range(config.num_labels)]
        if not self.has_head or old_classes != new_classes:
            for key in HEAD:
                del state[key]
            logger.warning("model.pretrained: new classifier for the data's %d classes (the checkpoint's: %s), "
                           "initialised like a fresh model's", len(new_classes),
                           f"{len(old_classes)} classes ({', '.join(map(str, old_classes[:5]))}"
                           f"{', ...' if len(old_classes) > 5 else ''})" if self.has_head else "none")
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= set(HEAD), (missing, unexpected)  # shapes match by construction
        logger.info("model.pretrained: %d tensors loaded from %s", len(state), self.source)
        return model


def load_pretrained(source: str, given: dict) -> Pretrained:
    """Load `source` and merge it with the run's model section (`given`: the keys the config sets, types checked)."""
    checkpoint, has_head = _load(source)
    for key in ARCHITECTURE:
        if key in given and given[key] != getattr(checkpoint.config, key):
            raise ConfigError(f"model.{key}={given[key]!r} conflicts with model.pretrained={source!r}, whose {key} is "
                              f"{getattr(checkpoint.config, key)!r}: the architecture comes from the checkpoint "
                              f"(remove model.{key})")
    fields = [name for name in ViTScratchConfig.__annotations__ if not name.startswith("_")]
    values = {name: given[name] if name in given else getattr(checkpoint.config, name) for name in fields}
    # refuses, e.g., an image_size that is not a multiple of the checkpoint's patch_size
    config = model_config(f"model.pretrained={source!r}", **values,
                          attn_implementation=given.get("attn_implementation"))
    mean = std = None
    try:
        processor = AutoImageProcessor.from_pretrained(source)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        logger.info("model.pretrained: normalising with its image processor's mean %s and std %s", mean, std)
    except (OSError, ValueError, AttributeError, TypeError):
        logger.info("model.pretrained: %s has no image processor; normalising with the training data's mean/std",
                    source)
    return Pretrained(source, checkpoint, config, has_head, mean, std)


def _load(source: str) -> tuple[ViTScratchForImageClassification, bool]:
    """The checkpoint as a ViTScratch model, and whether it holds a classifier."""
    if problem := local_source_problem(source):
        raise ConfigError(f"model.pretrained={source!r}: {problem}")
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type not in ("vit_scratch", "vit"):
            raise ConfigError(f"model.pretrained={source!r} is a {model_type!r} model: it takes a vit_scratch "
                              "checkpoint (a train.py output folder or Hub id) or a transformers ViT ('vit')")
        model_class = ViTScratchForImageClassification if model_type == "vit_scratch" else ViTForImageClassification
        model, info = model_class.from_pretrained(source, output_loading_info=True)
    except ConfigError:
        raise
    except Exception as error:  # OSError (no such folder or repo, offline), SafetensorError, ...
        raise ConfigError(f"model.pretrained={source!r}: cannot load it: {type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0]}") from None
    missing = sorted(key for key in info["missing_keys"] if not key.startswith("classifier."))
    if missing or info["mismatched_keys"]:
        raise ConfigError(f"model.pretrained={source!r}: incomplete weights ({', '.join(missing[:5]) or 'mismatched'})")
    has_head = not any(key.startswith("classifier.") for key in info["missing_keys"])
    if model_type == "vit":
        model = convert_from_transformers_vit(model)
    return model.float().eval(), has_head
