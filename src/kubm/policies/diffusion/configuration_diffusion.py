"""Typed configuration of a Diffusion Policy model.

The first block mirrors the pipeline config keys ``fit.diffusion.*``; the second holds
settings that keep their defaults in the pipeline (ablations, tests). Both are saved in
the model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kubm.policies.configuration import PolicyConfig, pipeline_defaults

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample")


@dataclass
@pipeline_defaults("diffusion")
class DiffusionConfig(PolicyConfig):
    LABEL = "Diffusion Policy"
    RENAMED = {"horizon": "chunk_steps"}  # old name → new (models saved before the rename)

    # --- pipeline keys: fit.diffusion.* (defaults: the config schema, via pipeline_defaults) ---
    chunk_steps: int  # predicted action chunk a_t … a_{t+chunk_steps−1} (was `horizon`)
    n_obs_steps: int  # observations o_{t−n_obs+1} … o_t conditioned on
    n_action_steps: int  # actions of each chunk executed before predicting again
    down_dims: list[int]
    kernel_size: int
    n_groups: int
    step_embed_dim: int
    num_train_timesteps: int
    num_inference_steps: int
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    ema_decay: float
    time_budget_s: float | None
    prediction_type: str  # x0; "epsilon" needs a far wider U-Net (fitting_diffusion.py)
    val_demos: int  # training demos held out for the validation chunk error (0: none)
    val_every: int  # iterations between validation checks
    # --- not pipeline keys ----------------------------------------------------------------
    beta_schedule: str = "squaredcos_cap_v2"
    lr_warmup_steps: int = 100
    inference_seed: int = 0  # seeds the sampling noise at every reset(): reproducible rollouts


    def __post_init__(self) -> None:
        self.down_dims = [int(d) for d in self.down_dims]
        problems = []
        for name in ("chunk_steps", "n_obs_steps", "n_action_steps", "kernel_size", "n_groups", "num_train_timesteps",
                     "num_inference_steps", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.n_action_steps > self.chunk_steps:
            problems.append(f"n_action_steps={self.n_action_steps} must be <= chunk_steps={self.chunk_steps}")
        if not self.down_dims or any(d < 1 for d in self.down_dims):
            problems.append(f"down_dims={self.down_dims} needs at least one width >= 1")
        elif self.chunk_steps % 2 ** (len(self.down_dims) - 1):
            problems.append(f"chunk_steps={self.chunk_steps} must be a multiple of 2^(len(down_dims)-1) = "
                            f"{2 ** (len(self.down_dims) - 1)} (the U-Net halves it per level)")
        elif any(d % self.n_groups for d in self.down_dims):
            problems.append(f"down_dims={self.down_dims} must be multiples of n_groups={self.n_groups}")
        if self.step_embed_dim < 2 or self.step_embed_dim % 2:
            problems.append(f"step_embed_dim={self.step_embed_dim} must be even and >= 2")
        if self.num_inference_steps > self.num_train_timesteps:
            problems.append(f"num_inference_steps={self.num_inference_steps} must be <= num_train_timesteps")
        if not self.lr > 0 or self.weight_decay < 0:
            problems.append("lr must be > 0 and weight_decay >= 0")
        if not 0 <= self.ema_decay <= 1:
            problems.append(f"ema_decay={self.ema_decay} must be in [0, 1]")
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule={self.beta_schedule!r} not in {BETA_SCHEDULES}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type={self.prediction_type!r} not in {PREDICTION_TYPES}")
        self.check_schedule(problems)
        if self.lr_warmup_steps < 0:
            problems.append(f"lr_warmup_steps={self.lr_warmup_steps} must be >= 0")
        self.raise_problems(problems)


