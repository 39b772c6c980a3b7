"""Typed configuration of a K-UBM model (DESIGN.md §1).

The first block mirrors the pipeline config keys ``fit.kubm.*`` (schema in
``kubm/schemas/config.schema.yaml``). The second block holds settings that are not
pipeline keys; they keep their defaults in the pipeline and exist for ablations and
tests. Both blocks are saved in the model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("tanh", "gelu")
# How ξ is normalised before it becomes the state block of z (see modeling_kubm):
#   standard: (ξ − mean) / std   (the default)
#   scale:    ξ / std            (no centring: a linear system stays linear, same spectrum)
#   none:     ξ                  (z[:d_ξ] is exactly ξ)
NORMALIZE = ("standard", "scale", "none")


@dataclass
class KubmConfig:
    # --- pipeline keys: fit.kubm.* -------------------------------------------------------
    d_psi: int = 128  # learned lift dimensions beyond ξ
    horizon: int = 20  # H of the multi-step coherence loss
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # widths of g_θ
    lr_g: float = 1e-3
    lr_K: float = 1e-4
    clip_K: float = 1.0  # clip_grad_norm_ on K
    iterations: int = 6000
    starts_per_demo: int = 32
    spectral_penalty: float = 0.0  # weight of relu(‖K‖₂ − 1)²
    time_budget_s: float | None = None
    # --- not pipeline keys (ablations, tests) ---------------------------------------------
    activation: str = "tanh"
    normalize: str = "standard"
    calib_starts_per_demo: int = 8  # replan-threshold calibration: start times per train demo
    calib_quantile: float = 95.0  # percentile of the centroid distances (px)
    check_every: int = 50  # spectral-radius divergence check period (iterations)
    max_abs_K: float = 1e3  # divergence: max |K_ij| above this
    max_rho: float = 10.0  # divergence: spectral radius above this

    PIPELINE_KEYS = ("d_psi", "horizon", "hidden", "lr_g", "lr_K", "clip_K", "iterations",
                     "starts_per_demo", "spectral_penalty", "time_budget_s")

    def __post_init__(self) -> None:
        self.hidden = [int(h) for h in self.hidden]
        problems = []
        if self.d_psi < 0:
            problems.append(f"d_psi={self.d_psi} must be >= 0")
        if self.horizon < 1:
            problems.append(f"horizon={self.horizon} must be >= 1")
        if any(h < 1 for h in self.hidden):
            problems.append(f"hidden={self.hidden} widths must be >= 1")
        for name in ("lr_g", "lr_K", "clip_K"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.iterations < 1 or self.starts_per_demo < 1 or self.calib_starts_per_demo < 1:
            problems.append("iterations, starts_per_demo and calib_starts_per_demo must be >= 1")
        if self.spectral_penalty < 0:
            problems.append(f"spectral_penalty={self.spectral_penalty} must be >= 0")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time_budget_s={self.time_budget_s} must be > 0 or null")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation={self.activation!r} not in {ACTIVATIONS}")
        if self.normalize not in NORMALIZE:
            problems.append(f"normalize={self.normalize!r} not in {NORMALIZE}")
        if not 0 < self.calib_quantile <= 100:
            problems.append(f"calib_quantile={self.calib_quantile} must be in (0, 100]")
        if problems:
            raise ValueError("invalid K-UBM config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KubmConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown K-UBM config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
