"""Time-indexed regression baseline: a per-timestep affine map from the first observation.

Input: the auxiliary initial state of K-UBM, ``x = ξ_{-1} = [qpos_0 ; s·φ_0 ; s·c]``,
standardised with training statistics (x̂). For every step t a separate affine map

    a_t = W_t x̂ + b_t

is fit by ridge least squares over the demos at least t+1 steps long (the bias is not
penalised: inputs and targets are centred per t). All steps that share the same set of
demos are solved at once. Executed open-loop: ``plan`` returns T actions (steps beyond the
longest demo hold the last one), ``flow`` is None, and there is no ``replan``.
"""

from __future__ import annotations

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
from kubm.policies.regression.configuration_regression import RegressionConfig

METHOD = "regression"
FORMAT_VERSION = 1
ARRAYS = ("W", "b", "x_mean", "x_std", "action_low", "action_high")


def ridge_affine(X: np.ndarray, Y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(W (d_in, d_out), b (d_out,)) minimising ‖X W + b − Y‖²/N + λ‖W‖²."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    xm, ym = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - xm, Y - ym
    n = len(X)
    if ridge > 0:
        W = np.linalg.solve(Xc.T @ Xc / n + ridge * np.eye(X.shape[1]), Xc.T @ Yc / n)
    else:
        W = np.linalg.lstsq(Xc, Yc, rcond=None)[0]
    return W, ym - xm @ W


class RegressionPolicy:
    """Per-timestep affine regression from ξ_{-1} to a_t; open-loop ``plan``; save / load."""

    method = METHOD
    replan_threshold_px = None  # never replans

    def __init__(self, config: RegressionConfig, W, b, x_mean, x_std, *, d_q: int, d_flow: int, d_c: int, s: float,
                 action_low, action_high, task_id: str | None = None, config_hash: str | None = None,
                 feature_attrs: dict | None = None, seed: int | None = None, extra: dict | None = None):
        self.config = config
        self.d_q, self.d_flow, self.d_c = int(d_q), int(d_flow), int(d_c)
        self.d_x = self.d_q + self.d_flow + self.d_c
        self.W = np.asarray(W, np.float64)  # (T_max, d_x, d_q)
        self.b = np.asarray(b, np.float64)  # (T_max, d_q)
        if self.W.ndim != 3 or self.W.shape[1:] != (self.d_x, self.d_q) or self.b.shape != (len(self.W), self.d_q):
            raise ValueError(f"W {self.W.shape} / b {self.b.shape} do not fit d_x={self.d_x}, d_q={self.d_q}")
        self.x_mean, self.x_std = np.asarray(x_mean, np.float64), np.asarray(x_std, np.float64)
        self.s = float(s)
        self._low, self._high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
        self.task_id, self.config_hash, self.seed = task_id, config_hash, seed
        self.feature_attrs = recorded_feature_attrs(feature_attrs)
        self.extra = dict(extra or {})
        self.source: str | None = None

    @property
    def T_max(self) -> int:
        return len(self.W)

    @classmethod
    def fit(cls, config: RegressionConfig, x0: np.ndarray, actions: list[np.ndarray], *, d_q: int, d_flow: int,
            d_c: int, s: float, action_low, action_high, **kw) -> RegressionPolicy:
        """x0 (N, d_x): each demo's ξ_{-1}; actions: per demo (T_e, d_q)."""
        x0 = np.asarray(x0, np.float64)
        if x0.ndim != 2 or x0.shape != (len(actions), d_q + d_flow + d_c):
            raise ValueError(f"x0 has shape {x0.shape}, expected ({len(actions)}, {d_q + d_flow + d_c})")
        mean, std = block_statistics(x0, (d_q, d_flow, d_c))
        xh = (x0 - mean) / std
        lengths = np.array([len(a) for a in actions])
        T_max = int(lengths.max())
        W, b = np.zeros((T_max, x0.shape[1], d_q)), np.zeros((T_max, d_q))
        start = 0
        for end in np.unique(lengths):  # steps start..end-1 share the demos with length >= end
            idx = np.flatnonzero(lengths >= end)
            Y = np.concatenate([np.asarray(actions[i][start:end], np.float64).reshape(1, -1) for i in idx])
            w, c = ridge_affine(xh[idx], Y, config.ridge)
            n = end - start
            W[start:end] = w.reshape(x0.shape[1], n, d_q).transpose(1, 0, 2)
            b[start:end] = c.reshape(n, d_q)
            start = end
        return cls(config, W, b, mean, std, d_q=d_q, d_flow=d_flow, d_c=d_c, s=s, action_low=action_low,
                   action_high=action_high, **kw)

    def plan(self, qpos0, flow0, context=None, T: int = 200) -> Plan:
        """T open-loop actions from the first observation (flow: None)."""
        xi = make_xi(check_vector("qpos", qpos0, self.d_q), check_vector("flow", flow0, self.d_flow),
                     check_vector("context", context, self.d_c), self.s)
        xh = (xi.astype(np.float64) - self.x_mean) / self.x_std
        a = np.einsum("i,tij->tj", xh, self.W) + self.b
        T = int(T)
        if T > len(a):
            a = np.concatenate([a, np.repeat(a[-1:], T - len(a), axis=0)])
        actions = np.clip(a[:T], self._low, self._high)
        return Plan(actions=actions.astype(np.float32), flow=None)

    # -- persistence ---------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {**policy_header(METHOD, FORMAT_VERSION, self, self.config.to_dict()), "scale_s": self.s,
                "T_max": self.T_max, "input_layout": "xi_-1 = [qpos_0 (d_q); s*flow_0 (d_flow); s*context (d_c)]",
                **self.extra}

    def save(self, directory) -> Path:
        arrays = {"W": self.W, "b": self.b, "x_mean": self.x_mean, "x_std": self.x_std,
                  "action_low": self._low, "action_high": self._high}
        return write_policy(directory, METHOD, arrays, self.config_dict())

    @classmethod
    def load(cls, directory) -> RegressionPolicy:
        directory, meta, w_path = read_policy(directory, METHOD, FORMAT_VERSION, "regression")
        a = load_arrays(w_path, directory, ARRAYS)
        known = {"method", "format", "task", "config_hash", "seed", "config", "d_q", "d_flow", "d_c", "features",
                 "scale_s", "T_max", "input_layout"}
        try:
            policy = cls(RegressionConfig.from_dict(meta["config"]), a["W"], a["b"], a["x_mean"], a["x_std"],
                         d_q=meta["d_q"], d_flow=meta["d_flow"], d_c=meta["d_c"], s=meta["scale_s"],
                         action_low=a["action_low"], action_high=a["action_high"], task_id=meta.get("task"),
                         config_hash=meta.get("config_hash"), feature_attrs=meta.get("features"),
                         seed=meta.get("seed"), extra={k: v for k, v in meta.items() if k not in known})
        except ValueError as e:
            raise ValueError(f"{directory}: weights do not match config.json ({e})") from e
        policy.source = str(directory)
        return policy
