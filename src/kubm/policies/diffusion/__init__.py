"""Diffusion Policy baseline: 1-D conv U-Net with FiLM conditioning, DDPM/DDIM (diffusers)."""

from kubm.policies.diffusion.configuration_diffusion import DiffusionConfig
from kubm.policies.diffusion.modeling_diffusion import (
    ConditionalUnet1D,
    DiffusionModel,
    DiffusionPolicy,
    make_schedulers,
    train_diffusion,
)

__all__ = ["ConditionalUnet1D", "DiffusionConfig", "DiffusionModel", "DiffusionPolicy", "make_schedulers",
           "train_diffusion"]
