"""vit-scratch: a Vision Transformer written from scratch as a first-class `transformers` model.

Importing the package registers `vit_scratch` with the Auto classes, and marks the classes so that every
`save_pretrained` folder carries `auto_map` and the two code files (loadable with `trust_remote_code=True`
where this package is not installed).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_vit_scratch import ViTScratchConfig
from .convert import convert_from_transformers_vit
from .modeling_vit_scratch import ViTScratchForImageClassification, ViTScratchModel, ViTScratchPreTrainedModel

AutoConfig.register(ViTScratchConfig.model_type, ViTScratchConfig, exist_ok=True)
AutoModel.register(ViTScratchConfig, ViTScratchModel, exist_ok=True)
AutoModelForImageClassification.register(ViTScratchConfig, ViTScratchForImageClassification, exist_ok=True)

ViTScratchConfig.register_for_auto_class()
ViTScratchModel.register_for_auto_class("AutoModel")
ViTScratchForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "ViTScratchConfig",
    "ViTScratchForImageClassification",
    "ViTScratchModel",
    "ViTScratchPreTrainedModel",
    "convert_from_transformers_vit",
]
