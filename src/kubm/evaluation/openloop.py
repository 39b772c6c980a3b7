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

from kubm.policies.action_errors import FIRST_STEPS, plan_errors, squared_errors, summarise

__all__ = ["FIRST_STEPS", "openloop_report", "plan_errors"]


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
        errs = squared_errors(policy, test.episodes)
        entry = by_method.setdefault(method, {"mode": "open-loop plan from xi_-1" if hasattr(policy, "plan")
                                              else "teacher-forced (demo observations, receding horizon)",
                                              "seeds": {}, "_errors": []})
        s = summarise(errs)
        entry["seeds"][d.name] = {k: v for k, v in s.items() if k != "action_rms_rad_per_step"}
        entry["_errors"] += errs
    for entry in by_method.values():
        entry["pooled"] = summarise(entry.pop("_errors"))
    return {"task": task_id, "test": str(test_path), "n_test_demos": len(test.episodes), "methods": by_method}
