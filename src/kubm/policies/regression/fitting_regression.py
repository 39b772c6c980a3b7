"""Fitting the time-indexed regression: one ridge regression per step from ξ_{-1} to a_t,
in closed form (the seed only names the model)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kubm.policies.action_errors import plan_errors
from kubm.policies.base import FitInputs, check_reload_plan, provenance, write_json
from kubm.policies.features import action_limits, compute_scale, make_xi
from kubm.policies.regression.configuration_regression import RegressionConfig
from kubm.policies.regression.modeling_regression import RegressionPolicy

__all__ = ["fit"]


def _openloop_actions(policy, episodes) -> dict:
    """Full-horizon plans from the first observation against the demos: action RMS (rad) per
    step and overall (the plans carry no flow)."""
    e = plan_errors(policy, episodes)
    per_step = e["action_rms_rad_per_step"]
    return {"plan_step": list(range(1, len(per_step) + 1)), "action_rms_rad": per_step, "n_demos": e["n_demos"],
            "action_rms_rad_overall": e["action_rms_rad"]}


def fit(cfg: RegressionConfig, inputs: FitInputs, out: Path) -> dict:
    train, seed = inputs.train, inputs.seed
    s = compute_scale(train)
    lo, hi = action_limits(train)
    x0 = np.stack([make_xi(ep.qpos[0], ep.flow[0], ep.context, s) for ep in train.episodes])
    t0 = time.perf_counter()
    policy = RegressionPolicy.fit(cfg, x0, [ep.action for ep in train.episodes], d_q=train.d_q,
                                  d_flow=train.d_flow, d_c=train.d_c, s=s, action_low=lo, action_high=hi,
                                  task_id=inputs.task_id, config_hash=inputs.config_hash, feature_attrs=train.attrs,
                                  seed=seed)
    train_s = time.perf_counter() - t0
    policy.extra = {"trained": {"wall_s": round(train_s, 2), "n_train_demos": len(train.episodes)}, **provenance()}
    policy.save(out)
    check_reload_plan(policy, out, inputs.test)
    ol_train, ol_test = _openloop_actions(policy, train.episodes), _openloop_actions(policy, inputs.test.episodes)
    write_json(out / "diagnostics.json", {"openloop_train": ol_train, "openloop_test": ol_test, "scale_s": s,
                                          "train_wall_s": round(train_s, 2), "T_max": policy.T_max})
    return {"method": "regression", "seed": seed, "train_wall_s": round(train_s, 2), "T_max": policy.T_max,
            "scale_s": s, "train_action_rms_rad": ol_train["action_rms_rad_overall"],
            "openloop_action_rms_rad": ol_test["action_rms_rad_overall"]}
