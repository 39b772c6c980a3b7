"""Typed configuration of a KODex (EDMD) model.

The first block mirrors the pipeline config keys ``fit.kodex.*``; the second holds
settings that keep their defaults in the pipeline (ablations, tests). Both are saved in
the model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kubm.policies.configuration import PolicyConfig, pipeline_defaults

NORMALIZE = ("standard", "scale", "none")


@dataclass
@pipeline_defaults("kodex")
class KodexConfig(PolicyConfig):
    LABEL = "KODex"

    # --- pipeline keys: fit.kodex.* (defaults: the config schema, via pipeline_defaults) ---
    degree: int  # highest monomial degree of the polynomial lift (1 = linear: z = ξ̄)
    # leading PCA components of ξ̄ (whitened) whose monomials of degree 2..degree enter the
    # lift; null = every dimension of ξ̄ itself (no PCA: ~13k dims at degree 2 for d_ξ≈160)
    pca_components: int | None
    ridge: float  # λ of K = (A Gᵀ/N)(G Gᵀ/N + λI)⁻¹
    constant: bool  # a constant 1 in the lift (affine dynamics in ξ̄)
    calib_horizon: int  # replan-threshold calibration: steps rolled out per start
    # --- not pipeline keys ----------------------------------------------------------------
    normalize: str = "standard"  # ξ̄ = (ξ−mean)/std | ξ/std | ξ  (as K-UBM's normalize)
    calib_starts_per_demo: int = 8
    calib_quantile: float = 95.0
    max_lift_dims: int = 20000  # refuse lifts bigger than this (the Gram matrix is d_z²)


    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.degree, int) or self.degree < 1:
            problems.append(f"degree={self.degree!r} must be an integer >= 1")
        if self.pca_components is not None and self.pca_components < 1:
            problems.append(f"pca_components={self.pca_components} must be >= 1 or null")
        if not self.ridge >= 0:
            problems.append(f"ridge={self.ridge} must be >= 0")
        if self.calib_horizon < 1 or self.calib_starts_per_demo < 1:
            problems.append("calib_horizon and calib_starts_per_demo must be >= 1")
        if not 0 < self.calib_quantile <= 100:
            problems.append(f"calib_quantile={self.calib_quantile} must be in (0, 100]")
        if self.normalize not in NORMALIZE:
            problems.append(f"normalize={self.normalize!r} not in {NORMALIZE}")
        if self.max_lift_dims < 1:
            problems.append(f"max_lift_dims={self.max_lift_dims} must be >= 1")
        self.raise_problems(problems)


