"""K-UBM: Koopman Unified Behavioural Model (docs/design.md, "The method").

Model (torch, :class:`KubmModel`)::

    ξ  = [a ; s·φ ; s·c]                          (kubm.policies.features.make_xi)
    ξ̄  = normalise(ξ) = (ξ − shift) / scale        per dimension, training statistics, saved
    z  = [ξ̄ ; g_θ(ξ̂)]                             state-inclusive lift, ξ̂ = (ξ − mean)/std
    z_{t+1} = K z_t                                dense K, K₀ = I, no input term

Normalisation: with the default ``normalize="standard"`` shift/scale are the training mean
and std of ξ (so K works in standardised coordinates, every dimension weighs alike in the
loss, and ``z[:d_ξ] == normalise(ξ)``). ``"scale"`` divides by the std without centring (a
linear system then stays linear and K has the same spectrum: a similarity transform);
``"none"`` keeps ``z[:d_ξ] == ξ`` exactly. g_θ always sees the standardised ξ̂. Stds below
1 % of their block's mean std (action / flow / context) are floored to that, and a block
that is constant throughout training gets std 1.

Training (loss, stable parameterisation, schedule) lives in ``fitting_kubm``; it writes
the dense K used here.

Policy (numpy, :class:`KubmPolicy`): ``plan`` lifts ξ_{-1} = [qpos_0; s·φ_0; s·c] and
reads a_k, φ_k from K^{k+1} z_0 (k = 0..T−1); ``replan`` lifts [last planned action;
s·φ_obs; s·c] the same way (not the measured qpos: docs/design.md, "Replanning"). Rollouts run in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kubm.policies.base import Plan, TorchPolicyFiles
from kubm.policies.features import check_vector, make_xi
from kubm.policies.kubm.configuration_kubm import KubmConfig

METHOD = "kubm"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# torch model
# ---------------------------------------------------------------------------------------

def _mlp(d_in: int, hidden: list[int], d_out: int, activation: str) -> nn.Sequential:
    act = {"tanh": nn.Tanh, "gelu": nn.GELU}[activation]
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class KubmModel(nn.Module):
    """Lift g_θ and Koopman matrix K, with ξ statistics, s and joint limits as buffers."""

    def __init__(self, config: KubmConfig, d_q: int, d_flow: int, d_c: int):
        super().__init__()
        self.config = config
        self.d_q, self.d_flow, self.d_c = int(d_q), int(d_flow), int(d_c)
        self.d_xi = self.d_q + self.d_flow + self.d_c
        self.d_psi = int(config.d_psi)
        self.d_z = self.d_xi + self.d_psi
        d = self.d_xi
        self.register_buffer("xi_mean", torch.zeros(d))  # g_θ input standardisation
        self.register_buffer("xi_std", torch.ones(d))
        self.register_buffer("state_shift", torch.zeros(d))  # normalise(ξ) = (ξ − shift)/scale
        self.register_buffer("state_scale", torch.ones(d))
        self.register_buffer("scale_s", torch.ones(()))  # s = mean‖a‖ / mean‖φ‖
        self.register_buffer("action_low", torch.full((self.d_q,), -math.inf))
        self.register_buffer("action_high", torch.full((self.d_q,), math.inf))
        self.g = _mlp(d, config.hidden, self.d_psi, config.activation) if self.d_psi > 0 else None
        # an optional linear path beside the MLP: g(ξ̂) = W ξ̂ + MLP(ξ̂), so the lift can carry
        # the state linearly (an affine dependence on ξ_{-1}, as the regression has)
        self.g_linear = nn.Linear(d, self.d_psi, bias=False) if config.lift_skip and self.d_psi > 0 else None
        # the dense K the planner uses; training (fitting_kubm) writes it, K₀ = I
        self.K = nn.Parameter(torch.eye(self.d_z))

    # -- statistics ----------------------------------------------------------------------
    @torch.no_grad()
    def set_statistics(self, xi_rows: np.ndarray, s: float, action_low=None, action_high=None) -> None:
        """Normalisation from training ξ rows (N, d_ξ), the scale s, and joint limits."""
        x = np.asarray(xi_rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.d_xi:
            raise ValueError(f"xi rows have shape {x.shape}, expected (N, d_xi={self.d_xi})")
        mean, std = x.mean(axis=0), x.std(axis=0)
        blocks = [(0, self.d_q), (self.d_q, self.d_q + self.d_flow), (self.d_q + self.d_flow, self.d_xi)]
        for a, b in blocks:
            if b > a:
                ref = std[a:b].mean()
                std[a:b] = np.maximum(std[a:b], 0.01 * ref) if ref > 1e-12 else 1.0
        self.xi_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.xi_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        mode = self.config.normalize
        self.state_shift.copy_(self.xi_mean if mode == "standard" else torch.zeros_like(self.xi_mean))
        self.state_scale.copy_(self.xi_std if mode != "none" else torch.ones_like(self.xi_std))
        self.scale_s.fill_(float(s))
        if action_low is not None:
            self.action_low.copy_(torch.as_tensor(action_low, dtype=torch.float32))
        if action_high is not None:
            self.action_high.copy_(torch.as_tensor(action_high, dtype=torch.float32))

    # -- lift and dynamics ---------------------------------------------------------------
    def normalise(self, xi: torch.Tensor) -> torch.Tensor:
        return (xi - self.state_shift) / self.state_scale

    def denormalise(self, xi_bar: torch.Tensor) -> torch.Tensor:
        return xi_bar * self.state_scale + self.state_shift

    def lift(self, xi: torch.Tensor) -> torch.Tensor:
        """z = [normalise(ξ) ; g_θ(ξ̂)], (…, d_ξ) → (…, d_z)."""
        state = self.normalise(xi)
        if self.g is None:
            return state
        xi_hat = (xi - self.xi_mean) / self.xi_std
        psi = self.g(xi_hat)
        if self.g_linear is not None:
            psi = psi + self.g_linear(xi_hat)
        return torch.cat([state, psi], dim=-1)

    @torch.no_grad()
    def spectral_radius(self) -> float:
        return float(torch.linalg.eigvals(self.K.detach().double()).abs().max())


# ---------------------------------------------------------------------------------------
# numpy-facing policy
# ---------------------------------------------------------------------------------------

class KubmPolicy(TorchPolicyFiles):
    """A trained K-UBM: plan / replan from observations, save / load (safetensors + JSON)."""

    METHOD, FORMAT_VERSION, LABEL = METHOD, FORMAT_VERSION, "K-UBM"
    OWN_KEYS = frozenset({"d_xi", "d_z", "scale_s", "replan_threshold_px", "normalisation", "xi_layout"})
    MODEL_CLASS, CONFIG_CLASS = KubmModel, KubmConfig

    method = METHOD

    def __init__(self, model: KubmModel, *, task_id: str | None = None, config_hash: str | None = None,
                 feature_attrs: dict | None = None, replan_threshold_px: float | None = None,
                 seed: int | None = None, extra: dict | None = None):
        self._init_policy(model, task_id, config_hash, feature_attrs, seed, extra)
        self.replan_threshold_px = None if replan_threshold_px is None else float(replan_threshold_px)
        self.refresh()

    def refresh(self) -> None:
        """Cache K and the read-out statistics as float64 numpy (after training or loading)."""
        m = self.model
        self.K = m.K.detach().double().numpy().copy()
        self._shift = m.state_shift.detach().double().numpy()
        self._scale = m.state_scale.detach().double().numpy()
        self._low = m.action_low.detach().double().numpy()
        self._high = m.action_high.detach().double().numpy()
        self.s = float(m.scale_s)

    # -- dims ----------------------------------------------------------------------------
    config = property(lambda self: self.model.config)
    d_q = property(lambda self: self.model.d_q)
    d_flow = property(lambda self: self.model.d_flow)
    d_c = property(lambda self: self.model.d_c)
    d_xi = property(lambda self: self.model.d_xi)
    d_z = property(lambda self: self.model.d_z)

    # -- planning ------------------------------------------------------------------------
    def lift(self, first, flow, context=None) -> np.ndarray:
        """z for ξ = [first ; s·flow ; s·context] (float64, (d_z,))."""
        xi = make_xi(check_vector("action/qpos", first, self.d_q), check_vector("flow", flow, self.d_flow),
                     check_vector("context", context, self.d_c), self.s)
        with torch.no_grad():
            return self.model.lift(torch.from_numpy(xi)).double().numpy()

    def rollout(self, z0: np.ndarray, T: int) -> Plan:
        """Read a_k, φ_k out of K^{k+1} z0, k = 0..T−1."""
        K, z = self.K, np.asarray(z0, dtype=np.float64)
        states = np.empty((T, self.d_xi))
        for k in range(T):
            z = K @ z
            states[k] = z[: self.d_xi]
        xi = states * self._scale + self._shift
        actions = np.clip(xi[:, : self.d_q], self._low, self._high)
        flow = xi[:, self.d_q: self.d_q + self.d_flow] / self.s
        return Plan(actions=actions.astype(np.float32), flow=flow.astype(np.float32))

    def plan(self, qpos0, flow0, context=None, T: int = 200) -> Plan:
        """Full-horizon plan from the first observation: lifts ξ_{-1} = [qpos_0; s·φ_0; s·c]."""
        return self.rollout(self.lift(qpos0, flow0, context), int(T))

    def replan(self, last_action, flow_obs, context=None, T: int = 200) -> Plan:
        """New plan from [last planned action ; s·observed φ ; s·c] (not the measured qpos)."""
        return self.rollout(self.lift(last_action, flow_obs, context), int(T))

    @property
    def replan_threshold_by_step(self) -> list[float] | None:
        """The calibrated threshold per plan age (px), or None (use ``replan_threshold_px``)."""
        return self.extra.get("replan_threshold_px_by_step")

    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvals(self.K)

    def spectral_radius(self) -> float:
        return float(np.abs(self.eigenvalues()).max())

    # -- persistence ---------------------------------------------------------------------
    def config_dict(self) -> dict:
        m = self.model
        stats = {k: getattr(m, k).tolist() for k in
                 ("xi_mean", "xi_std", "state_shift", "state_scale", "action_low", "action_high")}
        stats = {k: [None if not math.isfinite(x) else x for x in v] for k, v in stats.items()}
        return {
            "method": METHOD, "format": FORMAT_VERSION, "task": self.task_id, "config_hash": self.config_hash,
            "seed": self.seed, "config": self.config.to_dict(),
            "d_q": self.d_q, "d_flow": self.d_flow, "d_c": self.d_c, "d_xi": self.d_xi, "d_z": self.d_z,
            "scale_s": self.s, "replan_threshold_px": self.replan_threshold_px,
            "features": self.feature_attrs, "normalisation": stats,
            "xi_layout": "[action (d_q); s*flow (d_flow); s*context (d_c)]", **self.extra,
        }

    @classmethod
    def _load_kwargs(cls, meta: dict) -> dict:
        return {"replan_threshold_px": meta.get("replan_threshold_px")}
