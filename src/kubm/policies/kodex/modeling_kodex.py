"""KODex baseline: EDMD with a fixed polynomial lift of the same ξ as K-UBM (docs/design.md, "Baselines").

Lift (numpy, :class:`PolynomialLift`), state-inclusive so ξ is read straight out of z::

    ξ   = [a ; s·φ ; s·c]                         (kubm.policies.features.make_xi)
    ξ̄   = (ξ − shift) / scale                     training statistics (normalize="standard")
    p   = ((ξ̄ − μ) V_m) / σ_m                      m leading PCA components of ξ̄, whitened
    z   = [ξ̄ ; 1 ; monomials of p of degree 2 … degree]

With 128-d flow, 30-d action and a context, a full degree-2 lift of ξ̄ is ~13k dimensions
(a 13k² Gram matrix); only ``pca_components`` (default 40: 820 quadratic terms, ~1k
dims in all) whitened principal components of ξ̄ enter the monomials, so the closed-form
fit takes seconds. ``pca_components: null`` uses ξ̄ itself. ``degree: 1`` is plain DMD on ξ̄.

Fit (closed form, EDMD with ridge): over all pairs (z_t, z_{t+1}) of every training
sequence (ξ_{-1} = [qpos_0; s·φ_0; s·c] prepended, as for K-UBM), with G = [z_t], A =
[z_{t+1}] as columns and N pairs, ``K = (A Gᵀ/N)(G Gᵀ/N + λI)⁻¹`` (``λ = 0``: ``K = A·pinv(G)``).

Planner: identical to K-UBM's: lift ξ_{-1}, read a_k, φ_k from K^{k+1} z_0, clip actions to
the training action limits; ``replan`` lifts [last planned action; s·φ_obs; s·c];
the replanning threshold is calibrated on training data by
``kubm.policies.koopman.calibrate_replan_threshold`` (the same procedure as K-UBM).
"""

from __future__ import annotations

import math
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np

from kubm.policies.base import Plan
from kubm.policies.persistence import load_arrays, read_policy, write_policy
from kubm.policies.features import (
    block_statistics,
    check_vector,
    make_xi,
    policy_header,
    recorded_feature_attrs,
)
from kubm.policies.kodex.configuration_kodex import KodexConfig

METHOD = "kodex"
FORMAT_VERSION = 1
ARRAYS = ("K", "state_shift", "state_scale", "pca_mean", "pca_basis", "action_low", "action_high")


class PolynomialLift:
    """z = [ξ̄ ; 1 ; monomials of p of degree 2..degree] for ξ rows (…, d_ξ), in float64."""

    def __init__(self, config: KodexConfig, state_shift, state_scale, pca_mean, pca_basis):
        self.config = config
        self.state_shift = np.asarray(state_shift, np.float64)
        self.state_scale = np.asarray(state_scale, np.float64)
        self.pca_mean = np.asarray(pca_mean, np.float64)
        self.pca_basis = np.asarray(pca_basis, np.float64)  # (d_ξ, m), whitening included
        self.d_xi = self.state_shift.size
        m = self.pca_basis.shape[1]
        self.combos = [np.asarray(list(combinations_with_replacement(range(m), k)), np.int64).reshape(-1, k)
                       for k in range(2, config.degree + 1)]
        self.d_z = self.d_xi + int(config.constant) + sum(len(c) for c in self.combos)

    @staticmethod
    def n_dims(d_xi: int, m: int, degree: int, constant: bool) -> int:
        return d_xi + int(constant) + sum(math.comb(m + k - 1, k) for k in range(2, degree + 1))

    def __call__(self, xi: np.ndarray) -> np.ndarray:
        xi = np.asarray(xi, np.float64)
        state = (xi - self.state_shift) / self.state_scale
        parts = [state]
        if self.config.constant:
            parts.append(np.ones(state.shape[:-1] + (1,)))
        if self.combos:
            p = (state - self.pca_mean) @ self.pca_basis
            for c in self.combos:
                parts.append(np.prod(p[..., c], axis=-1))
        return np.concatenate(parts, axis=-1)


def lift_statistics(config: KodexConfig, xi_rows: np.ndarray, d_q: int, d_flow: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(state_shift, state_scale, pca_mean, pca_basis) from training ξ rows (N, d_ξ)."""
    x = np.asarray(xi_rows, np.float64)
    d_xi = x.shape[1]
    mean, std = block_statistics(x, (d_q, d_flow, d_xi - d_q - d_flow))
    shift = mean if config.normalize == "standard" else np.zeros(d_xi)
    scale = std if config.normalize != "none" else np.ones(d_xi)
    state = (x - shift) / scale
    if config.degree < 2:
        return shift, scale, np.zeros(d_xi), np.zeros((d_xi, 0))
    if config.pca_components is None:
        return shift, scale, np.zeros(d_xi), np.eye(d_xi)
    mu = state.mean(axis=0)
    _, sv, vt = np.linalg.svd(state - mu, full_matrices=False)
    m = min(int(config.pca_components), len(sv))
    sigma = sv[:m] / math.sqrt(max(len(state) - 1, 1))
    sigma = np.where(sigma > 1e-8 * max(sigma.max(initial=0.0), 1e-300), sigma, 1.0)
    return shift, scale, mu, vt[:m].T / sigma


def fit_edmd(lift: PolynomialLift, sequences: list[np.ndarray], ridge: float) -> tuple[np.ndarray, dict]:
    """K from all (z_t, z_{t+1}) pairs of the ξ sequences; returns (K, fit diagnostics)."""
    d = lift.d_z
    G, C, n, sq = np.zeros((d, d)), np.zeros((d, d)), 0, 0.0
    for seq in sequences:
        Z = lift(seq)
        Z0, Z1 = Z[:-1], Z[1:]
        G += Z0.T @ Z0
        C += Z1.T @ Z0
        sq += float((Z1 ** 2).sum())
        n += len(Z0)
    if n == 0:
        raise ValueError("EDMD needs at least one (z_t, z_t+1) pair: every sequence has a single state")
    G, C = G / n, C / n
    if ridge > 0:
        K = np.linalg.solve(G + ridge * np.eye(d), C.T).T  # G symmetric: K (G + λI) = C
    else:
        K = C @ np.linalg.pinv(G)
    # mean squared one-step residual ‖z_{t+1} − K z_t‖², from the Gram matrices
    resid = sq / n - 2 * float(np.sum(K * C)) + float(np.sum((K @ G) * K))
    return K, {"n_pairs": n, "d_z": d, "one_step_mse": max(resid, 0.0), "target_ms": sq / n,
               "one_step_rel": max(resid, 0.0) / max(sq / n, 1e-300)}


class KodexPolicy:
    """A fitted EDMD model: plan / replan like K-UBM; save / load (safetensors + JSON)."""

    method = METHOD

    def __init__(self, config: KodexConfig, K, lift_arrays: dict, *, d_q: int, d_flow: int, d_c: int, s: float,
                 action_low, action_high, task_id: str | None = None, config_hash: str | None = None,
                 feature_attrs: dict | None = None, replan_threshold_px: float | None = None,
                 seed: int | None = None, extra: dict | None = None):
        self.config = config
        self.d_q, self.d_flow, self.d_c = int(d_q), int(d_flow), int(d_c)
        self.d_xi = self.d_q + self.d_flow + self.d_c
        self.lifter = PolynomialLift(config, lift_arrays["state_shift"], lift_arrays["state_scale"],
                                     lift_arrays["pca_mean"], lift_arrays["pca_basis"])
        if self.lifter.d_xi != self.d_xi:
            raise ValueError(f"lift statistics have {self.lifter.d_xi} dims, d_q + d_flow + d_c = {self.d_xi}")
        self.K = np.asarray(K, np.float64)
        if self.K.shape != (self.lifter.d_z, self.lifter.d_z):
            raise ValueError(f"K has shape {self.K.shape}, the lift has {self.lifter.d_z} dims")
        self.s = float(s)
        self._low = np.asarray(action_low, np.float64)
        self._high = np.asarray(action_high, np.float64)
        self.task_id, self.config_hash, self.seed = task_id, config_hash, seed
        self.feature_attrs = recorded_feature_attrs(feature_attrs)
        self.replan_threshold_px = None if replan_threshold_px is None else float(replan_threshold_px)
        self.extra = dict(extra or {})
        self.source: str | None = None

    d_z = property(lambda self: self.lifter.d_z)

    @property
    def replan_threshold_by_step(self) -> list[float] | None:
        """The calibrated threshold per plan age (px), or None (use ``replan_threshold_px``)."""
        return self.extra.get("replan_threshold_px_by_step")

    @classmethod
    def fit(cls, config: KodexConfig, sequences: list[np.ndarray], *, d_q: int, d_flow: int, d_c: int, s: float,
            action_low, action_high, **kw) -> tuple[KodexPolicy, dict]:
        """Fit on ξ sequences (ξ_{-1} prepended); returns (policy, fit diagnostics)."""
        seqs = [np.asarray(q, np.float64) for q in sequences]
        d_xi = d_q + d_flow + d_c
        rows = np.concatenate(seqs)
        if rows.shape[1] != d_xi:
            raise ValueError(f"ξ rows have {rows.shape[1]} dims, d_q + d_flow + d_c = {d_xi}")
        m = 0 if config.degree < 2 else (d_xi if config.pca_components is None
                                         else min(config.pca_components, d_xi, len(rows)))
        dims = PolynomialLift.n_dims(d_xi, m, config.degree, config.constant)
        if dims > config.max_lift_dims:
            raise ValueError(f"the KODex lift would have {dims} dimensions (d_ξ={d_xi}, degree={config.degree}, "
                             f"{m} components), above max_lift_dims={config.max_lift_dims}; lower "
                             "fit.kodex.pca_components or degree")
        shift, scale, mu, basis = lift_statistics(config, rows, d_q, d_flow)
        arrays = {"state_shift": shift, "state_scale": scale, "pca_mean": mu, "pca_basis": basis}
        lift = PolynomialLift(config, shift, scale, mu, basis)
        K, diag = fit_edmd(lift, seqs, config.ridge)
        policy = cls(config, K, arrays, d_q=d_q, d_flow=d_flow, d_c=d_c, s=s, action_low=action_low,
                     action_high=action_high, **kw)
        diag["spectral_radius"] = policy.spectral_radius()
        return policy, diag

    # -- planning ------------------------------------------------------------------------
    def lift(self, first, flow, context=None) -> np.ndarray:
        """z for ξ = [first ; s·flow ; s·context] (float64, (d_z,))."""
        xi = make_xi(check_vector("action/qpos", first, self.d_q), check_vector("flow", flow, self.d_flow),
                     check_vector("context", context, self.d_c), self.s)
        return self.lifter(xi)

    def rollout(self, z0: np.ndarray, T: int) -> Plan:
        """Read a_k, φ_k out of K^{k+1} z0, k = 0..T−1 (actions clipped to the training limits)."""
        z = np.asarray(z0, np.float64)
        states = np.empty((int(T), self.d_xi))
        for k in range(int(T)):
            z = self.K @ z
            states[k] = z[: self.d_xi]
        with np.errstate(over="ignore", invalid="ignore"):
            xi = states * self.lifter.state_scale + self.lifter.state_shift
        xi = np.nan_to_num(xi, nan=0.0, posinf=1e30, neginf=-1e30)
        actions = np.clip(xi[:, : self.d_q], self._low, self._high)
        flow = xi[:, self.d_q: self.d_q + self.d_flow] / self.s
        return Plan(actions=actions.astype(np.float32), flow=np.clip(flow, -3e38, 3e38).astype(np.float32))

    def plan(self, qpos0, flow0, context=None, T: int = 200) -> Plan:
        """Full-horizon plan from the first observation: lifts ξ_{-1} = [qpos_0; s·φ_0; s·c]."""
        return self.rollout(self.lift(qpos0, flow0, context), int(T))

    def replan(self, last_action, flow_obs, context=None, T: int = 200) -> Plan:
        """New plan from [last planned action ; s·observed φ ; s·c] (not the measured qpos)."""
        return self.rollout(self.lift(last_action, flow_obs, context), int(T))

    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvals(self.K)

    def spectral_radius(self) -> float:
        return float(np.abs(self.eigenvalues()).max())

    # -- persistence ---------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        lf = self.lifter
        return {"K": self.K, "state_shift": lf.state_shift, "state_scale": lf.state_scale, "pca_mean": lf.pca_mean,
                "pca_basis": lf.pca_basis, "action_low": self._low, "action_high": self._high}

    def config_dict(self) -> dict:
        return {**policy_header(METHOD, FORMAT_VERSION, self, self.config.to_dict()),
                "d_xi": self.d_xi, "d_z": self.d_z, "scale_s": self.s,
                "replan_threshold_px": self.replan_threshold_px,
                "xi_layout": "[action (d_q); s*flow (d_flow); s*context (d_c)]",
                "lift_layout": "[normalised xi (d_xi); 1 (if constant); monomials of whitened PCA "
                               "components of degree 2..degree]", **self.extra}

    def save(self, directory) -> Path:
        return write_policy(directory, METHOD, self.arrays(), self.config_dict())

    @classmethod
    def load(cls, directory) -> KodexPolicy:
        directory, meta, w_path = read_policy(directory, METHOD, FORMAT_VERSION, "KODex")
        arrays = load_arrays(w_path, directory, ARRAYS)
        known = {"method", "format", "task", "config_hash", "seed", "config", "d_q", "d_flow", "d_c", "d_xi", "d_z",
                 "scale_s", "replan_threshold_px", "features", "xi_layout", "lift_layout"}
        try:
            policy = cls(KodexConfig.from_dict(meta["config"]), arrays["K"], arrays, d_q=meta["d_q"],
                         d_flow=meta["d_flow"], d_c=meta["d_c"], s=meta["scale_s"], action_low=arrays["action_low"],
                         action_high=arrays["action_high"], task_id=meta.get("task"),
                         config_hash=meta.get("config_hash"), feature_attrs=meta.get("features"),
                         replan_threshold_px=meta.get("replan_threshold_px"), seed=meta.get("seed"),
                         extra={k: v for k, v in meta.items() if k not in known})
        except ValueError as e:
            raise ValueError(f"{directory}: weights do not match config.json ({e})") from e
        policy.source = str(directory)
        return policy
