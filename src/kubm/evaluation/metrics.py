"""Evaluation statistics: success intervals, smoothness, latency and flow divergence.

Shared by the evaluator and by whoever calibrates the replanning threshold (fit): the
divergence the planner compares against ``replan_threshold_px`` is
``centroid_divergence`` here, so calibrate with the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["centroid_divergence", "distinct_wilson_interval", "latency_stats", "mean_squared_jerk", "wilson_interval"]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % for z = 1.96).

    n = 0 gives the uninformative (0, 1).
    """
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp: at k = 0 or k = n the bound is 0 or 1 up to rounding.
    return max(0.0, centre - half), min(1.0, centre + half)


def distinct_wilson_interval(outcomes, twins) -> tuple[float, float]:
    """Wilson interval over (training seed, success) episode outcomes, leaving out the training
    seeds in ``twins``: their models are identical to another seed's, so their episodes are
    reused copies, not new evidence."""
    kept = [bool(ok) for seed, ok in outcomes if int(seed) not in twins]
    return wilson_interval(sum(kept), len(kept))


def mean_squared_jerk(actions: np.ndarray, fps: float) -> float:
    """Mean over time and dimensions of the squared jerk of an action sequence [T, d].

    Jerk is the third finite difference times fps³ (exact for a cubic in time). Fewer than
    4 steps have no jerk: NaN.
    """
    a = np.asarray(actions, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"actions must be [T, d], got shape {a.shape}")
    if len(a) < 4:
        return float("nan")
    jerk = np.diff(a, n=3, axis=0) * float(fps) ** 3
    return float(np.mean(jerk**2))


def latency_stats(samples_s: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """Median and 95th percentile of latency samples given in seconds, in milliseconds.

    No samples give None for both (JSON null, not NaN).
    """
    s = np.asarray(samples_s, np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        return {"median": None, "p95": None}
    return {"median": float(np.median(s) * 1e3), "p95": float(np.percentile(s, 95) * 1e3)}


def centroid_divergence(observed_xy: np.ndarray, observed_visible: np.ndarray | None,
                        predicted_xy: np.ndarray) -> float:
    """Pixel distance between the observed and the predicted centroid of the object points.

    observed_xy [N,2], observed_visible [N] bool (None = all visible), predicted_xy [N,2]
    (the decoded predicted flow). Points correspond by index (canonical query order), so both
    centroids are taken over the *same* points: those visible now. Occlusion by the hand then
    does not move one centroid and not the other. No visible point: NaN (never triggers a
    replan).
    """
    obs = np.asarray(observed_xy, np.float64)
    pred = np.asarray(predicted_xy, np.float64)
    if obs.shape != pred.shape or obs.ndim != 2 or obs.shape[1] != 2:
        raise ValueError(f"observed {obs.shape} and predicted {pred.shape} points must both be [N,2]")
    vis = np.ones(len(obs), bool) if observed_visible is None else np.asarray(observed_visible, bool)
    vis = vis & np.all(np.isfinite(obs), 1) & np.all(np.isfinite(pred), 1)
    if not vis.any():
        return float("nan")
    return float(np.linalg.norm(obs[vis].mean(0) - pred[vis].mean(0)))
