"""Models by name: the embedded ``digits-vit`` and any timm ViT, DeiT or Swin."""

from psaq.models.checkpoint import load_checkpoint, save_checkpoint
from psaq.models.loader import MODELS, LoadedModel, ModelConfig, create_architecture, load_model, parse_model_args

__all__ = ["MODELS", "LoadedModel", "ModelConfig", "create_architecture", "load_checkpoint", "load_model", "parse_model_args", "save_checkpoint"]
