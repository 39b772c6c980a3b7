"""Point tracking: one interface, three backends (simulator, CoTracker3, OpenCV LK).

Conventions shared by every backend:
- Pixel coordinates are (x, y) = (column, row) with pixel centres at integers, so the
  top-left pixel covers [-0.5, 0.5)^2 and "inside the frame" is -0.5 <= x < W-0.5,
  -0.5 <= y < H-0.5 (the rounded coordinates name a pixel).
- Frames are RGB uint8 [T,H,W,3]; queries are float [N,3] rows (t, x, y).
- Offline: ``track(frames, queries, aux) -> Tracks``. Online: ``start(frame, queries, aux)``
  (queries must have t = 0) then ``update(frame, aux) -> (xy [N,2], visible [N])`` once per
  new frame. Offline and online give the same answer for every backend except
  CoTracker3 online, which lags (see tracking_cotracker).
- ``aux`` is simulator ground truth (FrameAux); only the ``sim`` backend needs it. The
  OpenCV backend reads the object mask from it for re-seeding when present.

The shared types are in tracking_types. Backends live in tracking_sim / tracking_lk /
tracking_cotracker and are imported lazily
(``make_tracker`` or attribute access on this module), so torch is only imported when
CoTracker3 is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "CoTrackerTracker",
    "FrameAux",
    "OpenCVLKTracker",
    "PointTracker",
    "SimPointTracker",
    "Tracks",
    "make_tracker",
    "tracking_metrics",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sim", "cotracker3", "opencv_lk")


from kubm.errors import ConfigError
from kubm.perception.errors import BackendUnavailable  # noqa: E402  (one class for both stages)
from kubm.perception.tracking_types import FrameAux, PointTracker, Tracks, check_frames, check_queries  # noqa: E402,F401


# ------------------------------------------------------------------ factory
_LAZY = {
    "SimPointTracker": "kubm.perception.tracking_sim",
    "OpenCVLKTracker": "kubm.perception.tracking_lk",
    "CoTrackerTracker": "kubm.perception.tracking_cotracker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cotracker_cfg(cfg: dict) -> dict:
    """CoTrackerTracker kwargs: the `cotracker3` section, with the section-level `device` and
    `weights[<model key>]` (the config's checkpoint paths) as fallbacks."""
    c = dict(cfg.get("cotracker3") or {})
    if c.get("model_resolution") is not None:
        c["model_resolution"] = tuple(c["model_resolution"])
    if cfg.get("device") and "device" not in c:
        c["device"] = cfg["device"]
    key = "cotracker3_online" if c.get("mode") == "online" else "cotracker3_offline"
    if c.get("checkpoint") is None and (cfg.get("weights") or {}).get(key):
        c["checkpoint"] = cfg["weights"][key]
    return c


def _auto_choice(cfg: dict) -> tuple[str, str]:
    """(backend, reason) for name="auto": CoTracker3 when a real checkpoint resolves."""
    from kubm.perception.weights import CheckpointNotFound, resolve_checkpoint

    c = _cotracker_cfg(cfg)
    key = "cotracker3_online" if c.get("mode") == "online" else "cotracker3_offline"
    if c.get("checkpoint") == "random":
        return "sim", "cotracker3.checkpoint is 'random' (test-only weights are never chosen by auto)"
    if importlib.util.find_spec("cotracker") is None:
        return "sim", "the cotracker package is not installed"
    try:
        path = resolve_checkpoint(key, c.get("checkpoint"))
    except CheckpointNotFound as e:
        checked = [ln.strip(" -") for ln in str(e).splitlines() if ln.startswith("  - ")]
        return "sim", f"no {key} checkpoint (checked: {'; '.join(checked)})"
    return "cotracker3", f"{key} checkpoint found at {path}"


def make_tracker(name: str, cfg: dict | None = None) -> PointTracker:
    """Build a tracker by name from the `track` config section: per-backend sub-dicts
    (``sim``, ``opencv_lk``, ``cotracker3``), plus optional ``device`` (auto|cpu|cuda, for
    CoTracker3) and ``weights`` ({model key: checkpoint path}); other keys are ignored.

    ``auto``: CoTracker3 when its checkpoint resolves (never random weights), else ``sim``;
    the choice and the reason are logged and kept in ``describe()["auto_reason"]``. An
    explicitly named backend that cannot run raises BackendUnavailable: no fallback.
    """
    cfg = cfg or {}
    if name == "auto":
        name, reason = _auto_choice(cfg)
        try:
            tracker = make_tracker(name, cfg)
        except BackendUnavailable as e:  # e.g. a CUDA device asked for on a CPU machine
            name, reason = "sim", f"cotracker3 cannot run here: {str(e).splitlines()[0]}"
            tracker = make_tracker(name, cfg)
        log.warning("track backend auto -> %s: %s", name, reason)
        tracker.auto_reason = reason
        return tracker
    if name == "sim":
        from kubm.perception.tracking_sim import SimPointTracker

        tracker = SimPointTracker(**(cfg.get("sim") or {}))
    elif name == "opencv_lk":
        from kubm.perception.tracking_lk import OpenCVLKTracker

        tracker = OpenCVLKTracker(**(cfg.get("opencv_lk") or {}))
    elif name == "cotracker3":
        from kubm.perception.tracking_cotracker import CoTrackerTracker

        tracker = CoTrackerTracker(**_cotracker_cfg(cfg))
    else:
        raise ConfigError(f"unknown tracker backend {name!r}; allowed: {', '.join(BACKENDS)}")
    return tracker


# ------------------------------------------------------------------ metrics
def tracking_metrics(pred: Tracks, gt: Tracks) -> dict:
    """Quality of `pred` against ground-truth tracks (same queries, same frames).

    Position errors count every (t, n) where gt says visible (query frames included);
    visibility agreement counts every (t, n).
    """
    if pred.xy.shape != gt.xy.shape:
        raise ValueError(f"pred {pred.xy.shape} and gt {gt.xy.shape} tracks differ in shape")
    T, N = gt.visible.shape
    err = np.linalg.norm(pred.xy - gt.xy, axis=-1)[gt.visible]
    n = int(err.size)
    return {
        "median_px": float(np.median(err)) if n else float("nan"),
        "within_2px": float(np.mean(err < 2.0)) if n else float("nan"),
        "visibility_agreement": float(np.mean(pred.visible == gt.visible)) if T * N else float("nan"),
        "n_points": int(N),
        "n_frames": int(T),
        "n_visible": n,
    }
