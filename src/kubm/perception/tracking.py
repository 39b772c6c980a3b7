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

Backends live in tracking_sim / tracking_lk / tracking_cotracker and are imported lazily
(``make_tracker`` or attribute access on this module), so torch is only imported when
CoTracker3 is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


@dataclass
class Tracks:
    xy: np.ndarray  # [T,N,2] float32 pixel coords (x = column, y = row)
    visible: np.ndarray  # [T,N] bool
    queries: np.ndarray  # [N,3] float32 (t, x, y)

    def __post_init__(self):
        self.xy = np.asarray(self.xy, np.float32)
        self.visible = np.asarray(self.visible, bool)
        self.queries = np.asarray(self.queries, np.float32)
        T, N = self.visible.shape
        if self.xy.shape != (T, N, 2) or self.queries.shape != (N, 3):
            raise ValueError(
                f"inconsistent Tracks shapes: xy {self.xy.shape}, visible {self.visible.shape}, "
                f"queries {self.queries.shape}"
            )


@dataclass
class FrameAux:
    """Simulator ground truth for one frame, or for T frames with a leading T axis.

    Per frame: depth [H,W] float32 metres along the optical axis; seg [H,W] int body ids;
    object_pose [B,7] world pose (x, y, z, qw, qx, qy, qz) of each object body; object_ids
    [B] seg ids of those bodies (same order); K [3,3]; world_to_cam [4,4] (OpenCV axes).
    Stacked for offline use: depth [T,H,W], seg [T,H,W], object_pose [T,B,7]; object_ids
    stays [B]; K and world_to_cam may be [3,3]/[4,4] (fixed camera) or [T,3,3]/[T,4,4].
    Fields a backend does not read may be None.
    """

    depth: np.ndarray | None = None
    seg: np.ndarray | None = None
    object_pose: np.ndarray | None = None
    object_ids: np.ndarray | None = None
    K: np.ndarray | None = None
    world_to_cam: np.ndarray | None = None

    @staticmethod
    def stack(frames: list[FrameAux]) -> FrameAux:
        """Per-frame FrameAux list -> one stacked FrameAux (object_ids from the first)."""

        def st(name):
            vals = [getattr(f, name) for f in frames]
            return None if any(v is None for v in vals) else np.stack(vals)

        return FrameAux(
            depth=st("depth"), seg=st("seg"), object_pose=st("object_pose"),
            object_ids=frames[0].object_ids, K=st("K"), world_to_cam=st("world_to_cam"),
        )

    def at(self, t: int) -> FrameAux:
        """Frame t of a stacked FrameAux; per-frame camera matrices are indexed, fixed ones kept."""

        def pick(x, ndim_single):
            if x is None or np.ndim(x) == ndim_single:
                return x
            return np.asarray(x)[t]

        return FrameAux(
            depth=pick(self.depth, 2), seg=pick(self.seg, 2), object_pose=pick(self.object_pose, 2),
            object_ids=self.object_ids, K=pick(self.K, 2), world_to_cam=pick(self.world_to_cam, 2),
        )

    def object_mask(self) -> np.ndarray | None:
        """Pixels of any object body ([H,W] or [T,H,W] bool), or None without seg/ids."""
        if self.seg is None or self.object_ids is None:
            return None
        return np.isin(self.seg, np.asarray(self.object_ids))


@runtime_checkable
class PointTracker(Protocol):
    def track(self, frames: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None) -> Tracks: ...

    def start(self, frame: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None) -> None: ...

    def update(self, frame: np.ndarray, aux: FrameAux | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict: ...


def check_queries(queries: np.ndarray, online: bool = False) -> np.ndarray:
    q = np.asarray(queries, np.float32)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(f"queries must be [N,3] rows (t, x, y), got shape {q.shape}")
    if online and np.any(q[:, 0] != 0):
        raise ValueError("online start() takes queries on the start frame: every t must be 0")
    return q


def check_frames(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"frames must be [T,H,W,3] uint8, got {f.shape} {f.dtype}")
    return f


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
