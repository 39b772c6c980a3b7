"""The planner contract K-UBM and KODex share: one replanning-threshold calibration, one
open-loop error report, and the plots and diagnostics of a linear Koopman operator K
(docs/design.md, "Replanning").

A Koopman planner has ``lift(first, flow, context) -> z``, ``rollout(z, T) -> Plan``,
``plan``, ``replan``, ``eigenvalues()`` and a ``config`` with the calibration settings
(``calib_horizon``, ``calib_starts_per_demo``, ``calib_quantile``). Whether to replan is
decided in one place, the evaluator (``kubm.evaluation.rollout``), from the calibrated
threshold per plan age.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kubm.policies.base import FitInputs
from kubm.policies.features import decoded_centroids

__all__ = ["calibrate_replan_threshold", "koopman_diagnostics", "openloop_errors", "set_replan_threshold"]



def calibrate_replan_threshold(policy, episodes, ae, *, horizon: int | None = None,
                               starts_per_demo: int | None = None, quantile: float | None = None,
                               min_count: int = 20) -> dict:
    """Replan thresholds (px) on training demos: a scalar and an envelope over plan age.

    From t = 0 (ξ_{-1}, qpos_0) and ``starts_per_demo`` evenly spaced later start times t
    per demo, re-lift [a_{t-1}; s·φ_t; s·c] exactly as ``replan`` does, roll out to the
    demo's end, decode the predicted latents with the flow AE and measure the distance of
    the predicted and true point centroids (px) at every plan age k (steps since the plan).

    - ``replan_threshold_px``: the ``quantile`` (95th) percentile over ages k < ``horizon``.
    - ``replan_threshold_px_by_step[k]``: the same percentile at age k (ages seen fewer than
      ``min_count`` times take the last well-sampled value), made non-decreasing. A plan's
      prediction error grows with its age, so a single threshold fires on every old plan
      even when it is as accurate as on the training demos; the envelope fires only when
      the divergence is unusual for a plan of that age.
    """
    cfg = policy.config
    H = int(horizon or cfg.calib_horizon)
    S = int(starts_per_demo or cfg.calib_starts_per_demo)
    q = float(quantile or cfg.calib_quantile)
    by_age: list[list[float]] = []
    for ep in episodes:
        T = len(ep)
        true_c = decoded_centroids(ae, ep.flow)
        starts = np.unique(np.concatenate([[0], np.linspace(0, T - 1, S + 1)[1:].round().astype(int)]))
        preds, spans = [], []
        for t in starts:
            first = ep.qpos[0] if t == 0 else ep.action[t - 1]
            plan = policy.rollout(policy.lift(first, ep.flow[t], ep.context), T - t)
            preds.append(plan.flow)
            spans.append((t, T - t))
        pred_c = decoded_centroids(ae, np.concatenate(preds))
        i = 0
        for t, n in spans:
            d = np.linalg.norm(pred_c[i: i + n] - true_c[t: t + n], axis=1)
            i += n
            for k, v in enumerate(d):
                if k == len(by_age):
                    by_age.append([])
                by_age[k].append(float(v))
    early = np.concatenate([np.asarray(v) for v in by_age[:H]])
    envelope, last = [], float(np.percentile(early, q))
    for v in by_age:
        if len(v) >= min_count:
            last = float(np.percentile(v, q))
        envelope.append(last)
    envelope = np.maximum.accumulate(np.asarray(envelope)).tolist()
    return {"replan_threshold_px": float(np.percentile(early, q)), "replan_threshold_px_by_step": envelope,
            "quantile": q, "horizon": H, "starts_per_demo": S, "n_distances": int(sum(len(v) for v in by_age)),
            "median_px": float(np.median(early)), "max_px": float(early.max())}


def openloop_errors(policy, episodes, ae=None) -> dict:
    """Full-horizon plans from ξ_{-1} against the demos, per horizon step k (0-based):
    action RMS (rad, over demos × joints), flow latent RMS, and (with ``ae``) the mean
    decoded point-centroid distance (px)."""
    T_max = max(len(ep) for ep in episodes)
    a_se, f_se, c_d = [[] for _ in range(T_max)], [[] for _ in range(T_max)], [[] for _ in range(T_max)]
    for ep in episodes:
        T = len(ep)
        plan = policy.plan(ep.qpos[0], ep.flow[0], ep.context, T)
        ae_err = ((plan.actions - ep.action) ** 2).mean(axis=1)
        fl_err = ((plan.flow - ep.flow) ** 2).mean(axis=1)
        cd = None
        if ae is not None:
            cd = np.linalg.norm(decoded_centroids(ae, plan.flow) - decoded_centroids(ae, ep.flow), axis=1)
        for k in range(T):
            a_se[k].append(ae_err[k])
            f_se[k].append(fl_err[k])
            if cd is not None:
                c_d[k].append(cd[k])
    out = {
        "plan_step": list(range(1, T_max + 1)),  # plan step k+1 = K^{k+1} z_0
        "action_rms_rad": [float(np.sqrt(np.mean(v))) for v in a_se],
        "flow_latent_rms": [float(np.sqrt(np.mean(v))) for v in f_se],
        "centroid_px": [float(np.mean(v)) for v in c_d] if ae is not None else None,
        "n_demos": len(episodes),
    }
    for k in (10, 50, 100, 200):
        if k <= T_max:
            out[f"action_rms_rad@{k}"] = out["action_rms_rad"][k - 1]
            if ae is not None:
                out[f"centroid_px@{k}"] = out["centroid_px"][k - 1]
    out["action_rms_rad_overall"] = float(np.sqrt(np.mean(np.concatenate([np.asarray(v) for v in a_se]))))
    return out


def _plot_eigs(eigs: np.ndarray, rho: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), "k--", lw=0.8, label="unit circle")
    ax.scatter(eigs.real, eigs.imag, s=8, c="C3", label="eig(K)")
    ax.set_aspect("equal")
    ax.set_title(f"eigenvalues of K, ρ = {rho:.4f}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_openloop(ol: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("action_rms_rad", "action RMS (rad)"), ("flow_latent_rms", "flow latent RMS")]
    if ol.get("centroid_px") is not None:
        panels.append(("centroid_px", "decoded centroid error (px)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, label) in zip(np.atleast_1d(axes), panels):
        ax.plot(ol["plan_step"], ol[key], lw=1)
        ax.set_xlabel("horizon (steps from ξ₋₁)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"open-loop prediction error, {ol['n_demos']} test demos")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def set_replan_threshold(policy, episodes, ae, **settings) -> dict | None:
    """Calibrate on the training demos and store the threshold (scalar and per plan age) in
    the policy; without a flow AE there is nothing to compare and the policy never replans."""
    if ae is None:
        policy.replan_threshold_px = None
        return None
    calib = calibrate_replan_threshold(policy, episodes, ae, **settings)
    policy.replan_threshold_px = calib["replan_threshold_px"]
    policy.extra["replan_threshold_px_by_step"] = calib["replan_threshold_px_by_step"]
    return calib


def koopman_diagnostics(policy, inputs: FitInputs, out: Path) -> dict:
    """Eigenvalues of K against the unit circle and open-loop errors on the test demos,
    as eigs.png, openloop.png and the returned dict (for diagnostics.json)."""
    eigs = policy.eigenvalues()
    rho = float(np.abs(eigs).max())
    _plot_eigs(eigs, rho, out / "eigs.png")
    ol = openloop_errors(policy, inputs.test.episodes, inputs.ae)
    _plot_openloop(ol, out / "openloop.png")
    return {"spectral_radius": rho, "n_eigs_outside_unit_circle": int((np.abs(eigs) > 1.0 + 1e-9).sum()),
            "eigenvalues": [[float(e.real), float(e.imag)] for e in eigs], "openloop_test": ol}

