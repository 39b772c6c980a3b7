"""Fitting KODex: EDMD in closed form on the training ξ sequences (deterministic; the
seed only names the model), then the same replanning-threshold calibration and Koopman
diagnostics as K-UBM (``kubm.policies.koopman``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kubm.policies.base import FitDiverged, FitInputs, check_reload_plan, provenance, write_json
from kubm.policies.features import action_limits, compute_scale, training_sequences
from kubm.policies.kodex.configuration_kodex import KodexConfig
from kubm.policies.kodex.modeling_kodex import KodexPolicy
from kubm.policies.koopman import koopman_diagnostics, set_replan_threshold

__all__ = ["fit"]


def fit(cfg: KodexConfig, inputs: FitInputs, out: Path) -> dict:
    train, seed = inputs.train, inputs.seed
    s = compute_scale(train)
    seqs = training_sequences(train, s)
    lo, hi = action_limits(train)
    np.random.seed(seed)
    t0 = time.perf_counter()
    policy, fitdiag = KodexPolicy.fit(cfg, seqs, d_q=train.d_q, d_flow=train.d_flow, d_c=train.d_c, s=s,
                                      action_low=lo, action_high=hi, task_id=inputs.task_id,
                                      config_hash=inputs.config_hash, feature_attrs=train.attrs, seed=seed)
    train_s = time.perf_counter() - t0
    if not np.isfinite(policy.K).all():
        raise FitDiverged(seed, 1, "the EDMD solution has non-finite entries", method="KODex",
                          hint="Raise fit.kodex.ridge.")
    policy.extra = {"trained": {"wall_s": round(train_s, 2), "n_train_demos": len(train.episodes), **fitdiag},
                    **provenance()}
    calib = set_replan_threshold(policy, train.episodes, inputs.ae, horizon=cfg.calib_horizon,
                                 starts_per_demo=cfg.calib_starts_per_demo, quantile=cfg.calib_quantile)
    policy.save(out)
    check_reload_plan(policy, out, inputs.test)
    diag = koopman_diagnostics(policy, inputs, out)
    write_json(out / "diagnostics.json", {**diag, "fit": fitdiag, "replan_calibration": calib, "scale_s": s,
                                          "train_wall_s": round(train_s, 2)})
    return {"method": "kodex", "seed": seed, "train_wall_s": round(train_s, 2), "d_z": policy.d_z,
            "one_step_rel": fitdiag["one_step_rel"], "spectral_radius": diag["spectral_radius"], "scale_s": s,
            "replan_threshold_px": policy.replan_threshold_px,
            "openloop_action_rms_rad": diag["openloop_test"]["action_rms_rad_overall"]}
