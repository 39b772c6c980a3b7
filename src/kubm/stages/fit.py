"""fit: train one method on a task's feature stores, for one training seed.

Output ``models/{suite}/{task}/{method}/seed{k}/`` (K-UBM)::

    model.safetensors, config.json     the policy (KubmPolicy.load / kubm.policies.load_policy)
    curves.json, loss.png              loss per iteration and wall time
    diagnostics.json                   eigenvalues and spectral radius of K, open-loop errors on
                                       the test demos, replanning-threshold calibration
    eigs.png, openloop.png             eigenvalues vs the unit circle; open-loop error vs horizon

Everything is written into ``<out>.partial`` and renamed to ``<out>`` only at the end, so
a diverged or interrupted fit never leaves a model at ``<out>``.

The flow AE (``--ae``, loaded with ``kubm.features.flow_ae.FlowAE.load``) is only used to
decode latents to pixel points: for the replanning threshold and the px diagnostics. Tests
pass any object with ``decode(latents [T, d_flow]) -> points [T, P, 2]`` as ``ae=``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from kubm.config import TaskConfig, with_method_config
from kubm.policies.features import (
    action_limits,
    compute_scale,
    load_features,
    training_sequences,
)
from kubm.policies.kubm import (
    FitDiverged,
    KubmConfig,
    KubmPolicy,
    calibrate_replan_threshold,
    openloop_errors,
)
from kubm.policies.kubm.fitting_kubm import fit_features
from kubm.provenance import git_revision, package_versions
from kubm.storage.atomic import atomic_dir
from kubm.errors import StageError

log = logging.getLogger(__name__)

__all__ = ["FitDiverged", "FitError", "fit", "load_flow_ae", "METHODS"]


class FitError(StageError):
    """The fit stage cannot run on its inputs (unknown method, mismatched stores, no AE)."""


def load_flow_ae(ae_dir):
    try:
        from kubm.features.flow_ae import FlowAE
    except ImportError as e:
        raise FitError(f"cannot load the flow autoencoder: kubm.features.flow_ae is not available ({e}); "
                       "it comes with the train_ae stage") from e
    try:
        return FlowAE.load(ae_dir)
    except Exception as e:  # whatever the AE's loader raises, say which directory and what to do
        raise FitError(f"{ae_dir}: cannot load the flow autoencoder ({type(e).__name__}: {e}); "
                       "run `kubm train-ae` for this task first") from e


def _plot_loss(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(curves["iteration"], curves["loss"], lw=0.8, label="total")
    for key in ("trajectory", "windows"):
        if any(v is not None for v in curves.get(key, [])):
            ax.semilogy(curves["iteration"], curves[key], lw=0.6, alpha=0.7, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fall = (curves.get("plateau") or {}).get("relative_fall")
    tail = "" if fall is None else f", last fifth −{100 * fall:.1f} %"
    ax.set_title(f"K-UBM training ({curves['time_s'][-1]:.0f} s{tail})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
        ax.plot(ol["horizon"], ol[key], lw=1)
        ax.set_xlabel("horizon (steps from ξ₋₁)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"open-loop prediction error, {ol['n_demos']} test demos")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_inputs(task: TaskConfig, train, test) -> None:
    for fs in (train, test):
        if fs.task_id is not None and fs.task_id != task.id:
            raise FitError(f"{fs.path}: features of task {fs.task_id}, but fitting {task.id}")
    if train.dims() != test.dims():
        raise FitError(f"train features {train.dims()} and test features {test.dims()} differ in dims")
    a, b = (train.attrs.get("ae") or {}).get("sha256"), (test.attrs.get("ae") or {}).get("sha256")
    if a and b and a != b:
        raise FitError(f"train and test features were encoded with different flow AEs ({a[:12]}… vs {b[:12]}…)")


def _fit_kubm(task: TaskConfig, config: dict, seed: int, train, test, ae, tmp: Path, progress: bool) -> dict:
    cfg = KubmConfig.from_dict(config["fit"]["kubm"])
    model, curves, s, train_s = fit_features(cfg, train, seed, progress=progress, desc=f"fit kubm {task.id} seed{seed}")
    policy = KubmPolicy(model, task_id=task.id, config_hash=task.hash(), feature_attrs=train.attrs, seed=seed,
                        extra={"trained": {"iterations": len(curves["loss"]), "wall_s": round(train_s, 2),
                                           "final_loss": curves["loss"][-1], "stopped": curves["stopped"],
                                           "plateau": curves["plateau"], "n_train_demos": len(train.episodes)},
                               "git_revision": git_revision(), "versions": package_versions()})
    calib = calibrate_replan_threshold(policy, train.episodes, ae) if ae is not None else None
    policy.replan_threshold_px = calib["replan_threshold_px"] if calib else None
    if calib:
        policy.extra["replan_threshold_px_by_step"] = calib["replan_threshold_px_by_step"]
    policy.save(tmp)
    # the saved model must reproduce the in-memory plan exactly
    ep = test.episodes[0]
    check = KubmPolicy.load(tmp).plan(ep.qpos[0], ep.flow[0], ep.context, len(ep))
    if not np.array_equal(check.actions, policy.plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions):
        raise RuntimeError(f"{tmp}: the reloaded model plans differently from the trained one")

    (tmp / "curves.json").write_text(json.dumps(curves))
    _plot_loss(curves, tmp / "loss.png")
    eigs = policy.eigenvalues()
    rho = float(np.abs(eigs).max())
    _plot_eigs(eigs, rho, tmp / "eigs.png")
    ol = openloop_errors(policy, test.episodes, ae)
    _plot_openloop(ol, tmp / "openloop.png")
    diagnostics = {
        "spectral_radius": rho,
        "n_eigs_outside_unit_circle": int((np.abs(eigs) > 1.0 + 1e-9).sum()),
        "eigenvalues": [[float(e.real), float(e.imag)] for e in eigs],
        "replan_calibration": calib,
        "openloop_test": ol,
        "scale_s": s,
        "final_loss": curves["loss"][-1],
        "iterations": len(curves["loss"]),
        "train_wall_s": round(train_s, 2),
        "stopped": curves["stopped"],
        "plateau": curves["plateau"],
        "max_rho_during_training": max(curves["rho"]),
        "openloop_train": openloop_errors(policy, train.episodes, None),
    }
    (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=1))
    return {"method": "kubm", "seed": seed, "iterations": len(curves["loss"]), "final_loss": curves["loss"][-1],
            "train_wall_s": round(train_s, 2), "spectral_radius": rho, "scale_s": s,
            "replan_threshold_px": policy.replan_threshold_px,
            "openloop_action_rms_rad": ol["action_rms_rad_overall"]}


def _summary_diag(tmp: Path, diagnostics: dict) -> None:
    (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=1, default=float))


def _openloop_actions(policy, episodes) -> dict:
    """Full-horizon plans from the first observation against the demos: action RMS (rad) per
    step and overall (for planners whose plans have no flow)."""
    from kubm.evaluation.openloop import plan_errors

    e = plan_errors(policy, episodes)
    per_step = e["action_rms_rad_per_step"]
    return {"horizon": list(range(1, len(per_step) + 1)), "action_rms_rad": per_step, "n_demos": e["n_demos"],
            "action_rms_rad_overall": e["action_rms_rad"]}


def _check_reload(policy, tmp: Path, test) -> None:
    """The saved model must reproduce the in-memory plan exactly."""
    from kubm.policies import load_policy

    ep = test.episodes[0]
    want = policy.plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions
    got = load_policy(tmp).plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions
    if not np.array_equal(got, want):
        raise RuntimeError(f"{tmp}: the reloaded model plans differently from the fitted one")


def _provenance() -> dict:
    return {"git_revision": git_revision(), "versions": package_versions()}


def _fit_kodex(task: TaskConfig, config: dict, seed: int, train, test, ae, tmp: Path, progress: bool) -> dict:
    """KODex: EDMD in closed form (deterministic; ``seed`` only names the model)."""
    from kubm.policies.kodex import KodexConfig, KodexPolicy

    cfg = KodexConfig.from_dict(config["fit"].get("kodex") or {})
    s = compute_scale(train)
    seqs = training_sequences(train, s)
    lo, hi = action_limits(train)
    np.random.seed(seed)
    t0 = time.perf_counter()
    policy, fitdiag = KodexPolicy.fit(cfg, seqs, d_q=train.d_q, d_flow=train.d_flow, d_c=train.d_c, s=s,
                                      action_low=lo, action_high=hi, task_id=task.id, config_hash=task.hash(),
                                      feature_attrs=train.attrs, seed=seed)
    train_s = time.perf_counter() - t0
    if not np.isfinite(policy.K).all():
        raise FitDiverged(seed, 1, "the EDMD solution has non-finite entries; raise fit.kodex.ridge")
    policy.extra = {"trained": {"wall_s": round(train_s, 2), "n_train_demos": len(train.episodes), **fitdiag},
                    **_provenance()}
    calib = None
    if ae is not None:
        calib = calibrate_replan_threshold(policy, train.episodes, ae, horizon=cfg.calib_horizon,
                                           starts_per_demo=cfg.calib_starts_per_demo, quantile=cfg.calib_quantile)
        policy.replan_threshold_px = calib["replan_threshold_px"]
        policy.extra["replan_threshold_px_by_step"] = calib["replan_threshold_px_by_step"]
    policy.save(tmp)
    _check_reload(policy, tmp, test)
    eigs = policy.eigenvalues()
    rho = float(np.abs(eigs).max())
    _plot_eigs(eigs, rho, tmp / "eigs.png")
    ol = openloop_errors(policy, test.episodes, ae)
    _plot_openloop(ol, tmp / "openloop.png")
    _summary_diag(tmp, {"spectral_radius": rho, "n_eigs_outside_unit_circle": int((np.abs(eigs) > 1.0 + 1e-9).sum()),
                        "fit": fitdiag, "replan_calibration": calib, "openloop_test": ol, "scale_s": s,
                        "train_wall_s": round(train_s, 2)})
    return {"method": "kodex", "seed": seed, "train_wall_s": round(train_s, 2), "d_z": policy.d_z,
            "one_step_rel": fitdiag["one_step_rel"], "spectral_radius": rho, "scale_s": s,
            "replan_threshold_px": policy.replan_threshold_px,
            "openloop_action_rms_rad": ol["action_rms_rad_overall"]}


def _fit_regression(task: TaskConfig, config: dict, seed: int, train, test, ae, tmp: Path, progress: bool) -> dict:
    """Per-timestep ridge regression from ξ_{-1} (closed form; ``seed`` only names the model)."""
    from kubm.policies.features import make_xi
    from kubm.policies.regression import RegressionConfig, RegressionPolicy

    cfg = RegressionConfig.from_dict(config["fit"].get("regression") or {})
    s = compute_scale(train)
    lo, hi = action_limits(train)
    x0 = np.stack([make_xi(ep.qpos[0], ep.flow[0], ep.context, s) for ep in train.episodes])
    t0 = time.perf_counter()
    policy = RegressionPolicy.fit(cfg, x0, [ep.action for ep in train.episodes], d_q=train.d_q,
                                  d_flow=train.d_flow, d_c=train.d_c, s=s, action_low=lo, action_high=hi,
                                  task_id=task.id, config_hash=task.hash(), feature_attrs=train.attrs, seed=seed)
    train_s = time.perf_counter() - t0
    policy.extra = {"trained": {"wall_s": round(train_s, 2), "n_train_demos": len(train.episodes)}, **_provenance()}
    policy.save(tmp)
    _check_reload(policy, tmp, test)
    ol_train, ol_test = _openloop_actions(policy, train.episodes), _openloop_actions(policy, test.episodes)
    _summary_diag(tmp, {"openloop_train": ol_train, "openloop_test": ol_test, "scale_s": s,
                        "train_wall_s": round(train_s, 2), "T_max": policy.T_max})
    return {"method": "regression", "seed": seed, "train_wall_s": round(train_s, 2), "T_max": policy.T_max,
            "scale_s": s, "train_action_rms_rad": ol_train["action_rms_rad_overall"],
            "openloop_action_rms_rad": ol_test["action_rms_rad_overall"]}


def _plot_chunk_curves(curves: dict, path: Path, title: str) -> None:
    """Training loss and, on a second axis, the held-out chunk RMS against the mean-action line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.semilogy(curves["iteration"], curves["loss"], lw=0.5, color="tab:blue")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss", color="tab:blue")
    if curves.get("val_iteration"):
        ax2 = ax.twinx()
        ax2.plot(curves["val_iteration"], curves["val_chunk_rms_rad"], "o-", color="tab:red", ms=3,
                 label="held-out chunk RMS")
        if curves.get("val_mean_action_rms_rad") is not None:
            ax2.axhline(curves["val_mean_action_rms_rad"], color="gray", ls="--", lw=0.8, label="mean action")
            ax2.axhline(0.3 * curves["val_mean_action_rms_rad"], color="gray", ls=":", lw=0.8, label="0.3 × mean")
        ax2.set_ylabel("action RMS (rad)", color="tab:red")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=7, loc="upper right")
    fall = (curves.get("plateau") or {}).get("relative_fall")
    tail = "" if fall is None else f", last fifth −{100 * fall:.1f} %"
    ax.set_title(f"{title} ({curves['time_s'][-1]:.0f} s{tail})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_reload_act(policy, tmp: Path, test, steps: int = 12) -> None:
    """The saved model must act exactly like the in-memory one (same weights, same noise)."""
    from kubm.policies import load_policy

    ep = test.episodes[0]
    loaded = load_policy(tmp)
    for p in (policy, loaded):
        p.reset()
    for t in range(min(steps, len(ep))):
        f = {"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t], "context": ep.context}
        if not np.array_equal(policy.act(f), loaded.act(f)):
            raise RuntimeError(f"{tmp}: the reloaded model acts differently from the trained one (step {t})")
    policy.reset()


def _fit_chunk_policy(method: str, task: TaskConfig, config: dict, seed: int, train, test, tmp: Path,
                      progress: bool) -> dict:
    """Diffusion Policy / ACT: train on (observation history, action chunk) windows of all but
    ``val_demos`` training demos; those score the chunks during and after training."""
    from kubm.policies.features import ChunkData, split_validation

    if method == "diffusion":
        from kubm.policies.diffusion import DiffusionConfig as Config
        from kubm.policies.diffusion import DiffusionModel as Model
        from kubm.policies.diffusion import DiffusionPolicy as Policy
        from kubm.policies.diffusion import denoising_errors
        from kubm.policies.diffusion import sampled_chunk_errors as chunk_errors_of
        from kubm.policies.diffusion import train_diffusion as train_fn
    else:
        from kubm.policies.act import ActConfig as Config
        from kubm.policies.act import ActModel as Model
        from kubm.policies.act import ActPolicy as Policy
        from kubm.policies.act import predicted_chunk_errors as chunk_errors_of
        from kubm.policies.act import train_act as train_fn
    cfg = Config.from_dict(config["fit"].get(method) or {})
    fit_eps, val_eps = split_validation(train.episodes, cfg.val_demos)
    data = ChunkData.from_episodes(fit_eps)
    val = ChunkData.from_episodes(val_eps) if val_eps else None
    lo, hi = action_limits(train)
    torch.manual_seed(seed)
    model = Model(cfg, train.d_q, train.d_flow, train.d_c)
    model.set_statistics(data.obs, data.action, lo, hi)
    t0, c0 = time.perf_counter(), time.process_time()
    curves = train_fn(model, data, seed=seed, val=val, progress=progress, desc=f"fit {method} {task.id} seed{seed}")
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    policy = Policy(model, task_id=task.id, config_hash=task.hash(), feature_attrs=train.attrs, seed=seed,
                    extra={"trained": {"iterations": len(curves["loss"]), "wall_s": round(train_s, 2),
                                       "cpu_s": round(cpu_s, 2), "final_loss": curves["loss"][-1],
                                       "stopped": curves["stopped"], "plateau": curves["plateau"],
                                       "n_train_demos": len(fit_eps), "n_val_demos": len(val_eps)},
                           **_provenance()})
    policy.save(tmp)
    _check_reload_act(policy, tmp, test)
    (tmp / "curves.json").write_text(json.dumps(curves))
    _plot_chunk_curves(curves, tmp / "loss.png", f"{method} {task.id} seed {seed}")
    mean_action = data.action.mean(axis=0)
    errors = {name: chunk_errors_of(model, ChunkData.from_episodes(eps), mean_action)
              for name, eps in (("train", fit_eps), ("val", val_eps), ("test", test.episodes)) if eps}
    diag = {f"chunk_errors_{k}": v for k, v in errors.items()}
    if method == "diffusion":
        diag["eps_mse_by_step"] = denoising_errors(model, data, seed=seed)
    _summary_diag(tmp, {**diag, "final_loss": curves["loss"][-1], "iterations": len(curves["loss"]),
                        "train_wall_s": round(train_s, 2), "train_cpu_s": round(cpu_s, 2),
                        "stopped": curves["stopped"], "plateau": curves["plateau"],
                        "n_parameters": int(sum(p.numel() for p in model.parameters()))})
    out = {"method": method, "seed": seed, "iterations": len(curves["loss"]), "final_loss": curves["loss"][-1],
           "train_wall_s": round(train_s, 2), "train_cpu_s": round(cpu_s, 2), "stopped": curves["stopped"],
           "plateau": curves["plateau"]}
    for k, v in errors.items():
        out[f"{k}_chunk_action_rms_rad"] = v["chunk_action_rms_rad"]
        out[f"{k}_ratio_to_mean_action"] = v["ratio_to_mean_action"]
    return out


def _fit_diffusion(task: TaskConfig, config: dict, seed: int, train, test, ae, tmp: Path, progress: bool) -> dict:
    """Diffusion Policy (the flow AE is not used)."""
    return _fit_chunk_policy("diffusion", task, config, seed, train, test, tmp, progress)


def _fit_act(task: TaskConfig, config: dict, seed: int, train, test, ae, tmp: Path, progress: bool) -> dict:
    """ACT (the flow AE is not used)."""
    return _fit_chunk_policy("act", task, config, seed, train, test, tmp, progress)


METHODS = {"kubm": _fit_kubm, "kodex": _fit_kodex, "regression": _fit_regression, "diffusion": _fit_diffusion,
           "act": _fit_act}


def fit(task: TaskConfig, config: dict, method: str, seed: int, train: Path, test: Path, ae_dir: Path | None,
        out_dir: Path, *, threads: int = 1, progress: bool = True, ae=None) -> dict:
    """Fit ``method`` for one training seed; returns a summary dict (also in diagnostics.json).

    ``ae`` overrides loading the flow AE from ``ae_dir`` (any object with ``decode``); with
    neither, fit fails (FitError). Raises FitDiverged (seed, iteration) with nothing written.
    """
    if method not in METHODS:
        raise FitError(f"unknown method {method!r}; methods with a fit: {sorted(METHODS)}")
    # fit.<method> with the task's method_params overrides (per-task chunk sizes, horizons)
    config = with_method_config(config, task.suite, task.task, method)
    torch.set_num_threads(max(1, int(threads)))
    out_dir = Path(out_dir)
    train_fs, test_fs = load_features(train), load_features(test)
    _check_inputs(task, train_fs, test_fs)
    if ae is None:
        if ae_dir is None:
            raise FitError("fit needs the flow autoencoder (--ae) to calibrate the replanning threshold")
        from kubm.features.flow_ae import ae_mismatch

        mismatch = ae_mismatch(ae_dir, train_fs.attrs, train_fs.path)
        if mismatch:
            raise FitError(mismatch)
        ae = load_flow_ae(ae_dir)
    with atomic_dir(out_dir) as tmp:
        summary = METHODS[method](task, config, int(seed), train_fs, test_fs, ae, tmp, progress)
        summary.setdefault("method", method)
        summary["fit_config"] = config["fit"].get(method)
        (tmp / "fit_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["out"] = str(out_dir)
    return summary

