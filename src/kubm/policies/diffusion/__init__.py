"""Diffusion Policy baseline: 1-D conv U-Net with FiLM conditioning, DDPM/DDIM (diffusers)."""

from kubm.policies.diffusion.configuration_diffusion import DiffusionConfig
from kubm.policies.diffusion.fitting_diffusion import denoising_errors, sampled_chunk_errors, train_diffusion
from kubm.policies.diffusion.modeling_diffusion import (
    ConditionalUnet1D,
    DiffusionModel,
    DiffusionPolicy,
    make_schedulers,
)

__all__ = ["ConditionalUnet1D", "DiffusionConfig", "DiffusionModel", "DiffusionPolicy", "denoising_errors",
           "make_schedulers", "sampled_chunk_errors", "train_diffusion"]
