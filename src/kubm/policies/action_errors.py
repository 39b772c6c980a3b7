"""Held-out action error of a policy against demos: the plan from ξ_{-1} for planners, the
demo's own observations fed step by step (teacher-forced) for receding-horizon actors.
Shared by the fits' diagnostics and the ``kubm openloop`` report."""

from __future__ import annotations

import numpy as np

__all__ = ["FIRST_STEPS", "plan_errors", "squared_errors", "summarise"]

FIRST_STEPS = 50


def squared_errors(policy, episodes) -> list[np.ndarray]:
    """Per demo, (T,) squared action error averaged over joints."""
    out = []
    for ep in episodes:
        if hasattr(policy, "plan"):
            actions = np.asarray(policy.plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions, np.float64)
        else:
            if hasattr(policy, "reset"):
                policy.reset()
            actions = np.stack([np.asarray(policy.act({"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t],
                                                       "context": ep.context}), np.float64).reshape(-1)
                                for t in range(len(ep))])
        out.append(((actions - ep.action) ** 2).mean(axis=1))
    return out


def summarise(errors: list[np.ndarray]) -> dict:
    T = max(len(e) for e in errors)
    per_step = [float(np.sqrt(np.mean([e[k] for e in errors if len(e) > k]))) for k in range(T)]
    flat = np.concatenate(errors)
    first = np.concatenate([e[:FIRST_STEPS] for e in errors])
    return {"action_rms_rad": float(np.sqrt(flat.mean())),
            f"action_rms_rad_first{FIRST_STEPS}": float(np.sqrt(first.mean())),
            "action_rms_rad_per_step": per_step, "n_demos": len(errors)}


def plan_errors(policy, episodes) -> dict:
    """Open-loop action RMS of one policy on ``episodes`` (per step and overall)."""
    return summarise(squared_errors(policy, episodes))
