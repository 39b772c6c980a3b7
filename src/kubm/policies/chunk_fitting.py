"""The fit shared by the two receding-horizon baselines (Diffusion Policy, ACT): train on
(observation history, action chunk) windows of all but ``val_demos`` training demos, score
the chunks of those held-out demos during and after training, save, and plot the curves
beside the model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from kubm.policies.base import FitInputs, check_reload_actor, provenance, write_json
from kubm.policies.devices import resolve_device
from kubm.policies.features import ChunkData, action_limits, split_validation

__all__ = ["fit_chunk_policy"]


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


def fit_chunk_policy(method: str, cfg, inputs: FitInputs, out: Path, *, model_cls, policy_cls,
                     train_fn: Callable, chunk_errors_fn: Callable, extra_diagnostics: Callable | None = None
                     ) -> dict:
    """``train_fn(model, data, seed=, val=, progress=, desc=) -> curves``;
    ``chunk_errors_fn(model, data, mean_action) -> dict``; ``extra_diagnostics(model, data,
    seed) -> dict`` adds method-specific entries to diagnostics.json."""
    train, test, seed = inputs.train, inputs.test, inputs.seed
    fit_eps, val_eps = split_validation(train.episodes, cfg.val_demos)
    data = ChunkData.from_episodes(fit_eps)
    val = ChunkData.from_episodes(val_eps) if val_eps else None
    lo, hi = action_limits(train)
    torch.manual_seed(seed)
    model = model_cls(cfg, train.d_q, train.d_flow, train.d_c)
    model.set_statistics(data.obs, data.action, lo, hi)
    device = resolve_device(inputs.device)
    model.to(device)
    t0, c0 = time.perf_counter(), time.process_time()
    curves = train_fn(model, data, seed=seed, val=val, progress=inputs.progress,
                      desc=f"fit {method} {inputs.task_id} seed{seed}")
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    model.to("cpu")  # saved, reloaded and scored on the CPU, as evaluation runs it
    policy = policy_cls(model, task_id=inputs.task_id, config_hash=inputs.config_hash, feature_attrs=train.attrs,
                        seed=seed, extra={"trained": {"iterations": len(curves["loss"]), "wall_s": round(train_s, 2),
                                                      "cpu_s": round(cpu_s, 2), "final_loss": curves["loss"][-1],
                                                      "stopped": curves["stopped"], "plateau": curves["plateau"],
                                                      "n_train_demos": len(fit_eps), "n_val_demos": len(val_eps)},
                                          **provenance()})
    policy.save(out)
    check_reload_actor(policy, out, test)
    (out / "curves.json").write_text(json.dumps(curves))
    _plot_chunk_curves(curves, out / "loss.png", f"{method} {inputs.task_id} seed {seed}")
    mean_action = data.action.mean(axis=0)
    errors = {name: chunk_errors_fn(model, ChunkData.from_episodes(eps), mean_action)
              for name, eps in (("train", fit_eps), ("val", val_eps), ("test", test.episodes)) if eps}
    diag = {f"chunk_errors_{k}": v for k, v in errors.items()}
    if extra_diagnostics is not None:
        diag.update(extra_diagnostics(model, data, seed))
    write_json(out / "diagnostics.json", {**diag, "final_loss": curves["loss"][-1], "iterations": len(curves["loss"]),
                                          "train_wall_s": round(train_s, 2), "train_cpu_s": round(cpu_s, 2),
                                          "stopped": curves["stopped"], "plateau": curves["plateau"],
                                          "device": str(device), "n_parameters": int(sum(p.numel() for p in model.parameters()))})
    summary = {"method": method, "seed": seed, "iterations": len(curves["loss"]), "final_loss": curves["loss"][-1],
               "train_wall_s": round(train_s, 2), "train_cpu_s": round(cpu_s, 2), "stopped": curves["stopped"],
               "plateau": curves["plateau"]}
    for k, v in errors.items():
        summary[f"{k}_chunk_action_rms_rad"] = v["chunk_action_rms_rad"]
        summary[f"{k}_ratio_to_mean_action"] = v["ratio_to_mean_action"]
    return summary
