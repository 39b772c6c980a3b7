"""Held-out open-loop action error of every fitted method of a task (a diagnostic target).

For planning methods (K-UBM, KODex, regression) the plan made from ξ_{-1} of each test
demo (qpos_0, φ_0, c) for the demo's whole length is compared with the demo's actions:
the error the executed open-loop plan would make if the world followed the demo.

Receding-horizon methods (Diffusion Policy, ACT) never plan a whole episode; they are
reported with the demo's own observations fed step by step (teacher-forced), which is
their best case, and marked so.

Output: per method, per training seed and pooled over seeds, the action RMS (rad) per
step (over demos × joints) and overall, and the first-50-step figure where the reach is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["openloop_report", "plan_errors"]

FIRST_STEPS = 50


def _squared_errors(policy, episodes) -> list[np.ndarray]:
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


def _summarise(errors: list[np.ndarray]) -> dict:
    T = max(len(e) for e in errors)
    per_step = [float(np.sqrt(np.mean([e[k] for e in errors if len(e) > k]))) for k in range(T)]
    flat = np.concatenate(errors)
    first = np.concatenate([e[:FIRST_STEPS] for e in errors])
    return {"action_rms_rad": float(np.sqrt(flat.mean())),
            f"action_rms_rad_first{FIRST_STEPS}": float(np.sqrt(first.mean())),
            "action_rms_rad_per_step": per_step, "n_demos": len(errors)}


def plan_errors(policy, episodes) -> dict:
    """Open-loop action RMS of one policy on ``episodes`` (per step and overall)."""
    return _summarise(_squared_errors(policy, episodes))


def openloop_report(model_dirs, test_path, *, task_id: str | None = None) -> dict:
    """Every model directory ``.../{method}/seed{k}`` against the test feature store."""
    from kubm.policies import check_compatible, load_policy
    from kubm.policies.features import load_features

    test = load_features(test_path)
    by_method: dict[str, dict] = {}
    for d in sorted(Path(p) for p in model_dirs):
        policy = load_policy(d, task_id=task_id)
        check_compatible(policy, test.attrs, task_id)
        method = getattr(policy, "method", d.parent.name)
        errs = _squared_errors(policy, test.episodes)
        entry = by_method.setdefault(method, {"mode": "open-loop plan from xi_-1" if hasattr(policy, "plan")
                                              else "teacher-forced (demo observations, receding horizon)",
                                              "seeds": {}, "_errors": []})
        s = _summarise(errs)
        entry["seeds"][d.name] = {k: v for k, v in s.items() if k != "action_rms_rad_per_step"}
        entry["_errors"] += errs
    for entry in by_method.values():
        entry["pooled"] = _summarise(entry.pop("_errors"))
    return {"task": task_id, "test": str(test_path), "n_test_demos": len(test.episodes), "methods": by_method}
