"""Typed configuration of an ACT (Action Chunking with Transformers) model.

The first block mirrors the pipeline config keys ``fit.act.*``; the second holds settings
that keep their defaults in the pipeline (ablations, tests). Both are saved in the model's
``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kubm.policies.configuration import PolicyConfig, pipeline_defaults


@dataclass
@pipeline_defaults("act")
class ActConfig(PolicyConfig):
    LABEL = "ACT"

    # --- pipeline keys: fit.act.* (defaults: the config schema, via pipeline_defaults) ---
    chunk_size: int  # actions predicted per query
    temporal_agg: bool  # temporal ensembling over every chunk that covers the step
    ensemble_k: float  # weights exp(−k·i), i = 0 the oldest prediction
    n_action_steps: int | None  # without temporal_agg: actions executed per chunk (None = chunk_size)
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    n_vae_encoder_layers: int
    dim_feedforward: int
    dropout: float
    latent_dim: int
    kl_weight: float
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    time_budget_s: float | None
    val_demos: int  # training demos held out for the validation chunk error (0: none)
    val_every: int  # iterations between validation checks
    # --- not pipeline keys ----------------------------------------------------------------
    grad_clip: float = 10.0


    def __post_init__(self) -> None:
        problems = []
        for name in ("chunk_size", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers",
                     "n_vae_encoder_layers", "dim_feedforward", "latent_dim", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_model % max(self.n_heads, 1):
            problems.append(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.n_action_steps is not None and not 1 <= self.n_action_steps <= self.chunk_size:
            problems.append(f"n_action_steps={self.n_action_steps} must be in [1, chunk_size={self.chunk_size}] or null")
        if self.ensemble_k < 0 or self.kl_weight < 0 or self.weight_decay < 0:
            problems.append("ensemble_k, kl_weight and weight_decay must be >= 0")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not self.lr > 0 or not self.grad_clip > 0:
            problems.append("lr and grad_clip must be > 0")
        self.check_schedule(problems)
        self.raise_problems(problems)


