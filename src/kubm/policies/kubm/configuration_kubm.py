"""Typed configuration of a K-UBM model (docs/design.md, "Fitting K-UBM").

The first block mirrors the pipeline config keys ``fit.kubm.*`` (schema in
``kubm/schemas/config.schema.yaml``). The second block holds settings that are not
pipeline keys; they keep their defaults in the pipeline and exist for ablations and
tests. Both blocks are saved in the model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from kubm.policies.configuration import PolicyConfig, pipeline_defaults

ACTIVATIONS = ("tanh", "gelu")
# How ξ is normalised before it becomes the state block of z (see modeling_kubm):
#   standard: (ξ − mean) / std   (the default)
#   scale:    ξ / std            (no centring: a linear system stays linear, same spectrum)
#   none:     ξ                  (z[:d_ξ] is exactly ξ)
NORMALIZE = ("standard", "scale", "none")


DYNAMICS = ("increment", "readout", "modal", "dense")


@dataclass
@pipeline_defaults("kubm")
class KubmConfig(PolicyConfig):
    LABEL = "K-UBM"
    RENAMED = {"horizon": "window_steps"}  # old name → new (models saved before the rename)

    # --- pipeline keys: fit.kubm.* (defaults: the config schema, via pipeline_defaults) ---
    d_psi: int  # learned lift dimensions beyond ξ
    hidden: list[int]  # widths of g_θ
    dynamics: str  # modal: K = P·blockdiag(r R(θ))·P⁻¹, ρ < 1 by construction; dense: free K
    trajectory_weight: float  # full-horizon rollouts from ξ_{-1}, every demo and step
    window_weight: float  # rollouts from later states (what a replan starts from)
    window_steps: int  # steps of each window (was `horizon`)
    starts_per_demo: int  # windows per demo and iteration
    lift_skip: bool  # g(ξ̂) = W ξ̂ + MLP(ξ̂): a linear path beside the MLP
    psi_weight: float  # loss weight of the lifted block relative to the ξ block
    action_weight: float  # loss weight of the action dims relative to the other ξ dims
    lr_g: float
    lr_K: float  # the dynamics' Adam rate (P, ν, θ; or the dense K)
    clip_K: float  # clip_grad_norm_ on the dynamics' parameters
    iterations: int
    time_budget_s: float | None  # optional extra wall-clock cap (makes fits machine-dependent)
    # --- not pipeline keys (ablations, tests) ---------------------------------------------
    activation: str = "tanh"
    normalize: str = "standard"
    lr_floor: float = 0.05  # cosine decay ends at this fraction of each base rate
    r_max: float = 0.9999  # modal: eigenvalue moduli stay below this
    r_init: float = 0.999  # modal: eigenvalue moduli at the start
    theta_init_max: float = 0.5  # modal: rotation angles start spread over [0, this] (rad/step)
    calib_horizon: int = 20  # replan-threshold calibration: steps after each (re)plan
    calib_starts_per_demo: int = 8  # replan-threshold calibration: start times per train demo
    calib_quantile: float = 95.0  # percentile of the centroid distances (px)
    resolve_every: int = 50  # readout: C re-solved in closed form every this many iterations (and at the end)
    init_ridge: float = 1e-3  # readout: ridge of the closed-form initial C (relative to the mean feature power)
    check_every: int = 50  # spectral-radius check period (iterations)
    max_abs_K: float = 1e3  # dense: divergence when max |K_ij| exceeds this
    max_rho: float = 10.0  # dense: divergence when the spectral radius exceeds this

    def __post_init__(self) -> None:
        self.hidden = [int(h) for h in self.hidden]
        problems = []
        if self.d_psi < 0:
            problems.append(f"d_psi={self.d_psi} must be >= 0")
        if self.window_steps < 1:
            problems.append(f"window_steps={self.window_steps} must be >= 1")
        if any(h < 1 for h in self.hidden):
            problems.append(f"hidden={self.hidden} widths must be >= 1")
        for name in ("lr_g", "lr_K", "clip_K"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.iterations < 1 or self.starts_per_demo < 1 or self.calib_starts_per_demo < 1:
            problems.append("iterations, starts_per_demo and calib_starts_per_demo must be >= 1")
        if self.calib_horizon < 1:
            problems.append(f"calib_horizon={self.calib_horizon} must be >= 1")
        for name in ("trajectory_weight", "window_weight", "psi_weight", "action_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"{name}={getattr(self, name)} must be a finite number >= 0")
        if not self.trajectory_weight + self.window_weight > 0:
            problems.append("trajectory_weight and window_weight cannot both be 0 (nothing to fit)")
        if self.dynamics not in DYNAMICS:
            problems.append(f"dynamics={self.dynamics!r} not in {DYNAMICS}")
        if not 0 < self.r_init < self.r_max <= 1:
            problems.append(f"need 0 < r_init ({self.r_init}) < r_max ({self.r_max}) <= 1")
        if not 0 < self.lr_floor <= 1:
            problems.append(f"lr_floor={self.lr_floor} must be in (0, 1]")
        self.check_schedule(problems)
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation={self.activation!r} not in {ACTIVATIONS}")
        if self.normalize not in NORMALIZE:
            problems.append(f"normalize={self.normalize!r} not in {NORMALIZE}")
        if not 0 < self.calib_quantile <= 100:
            problems.append(f"calib_quantile={self.calib_quantile} must be in (0, 100]")
        self.raise_problems(problems)


