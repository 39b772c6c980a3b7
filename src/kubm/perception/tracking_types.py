"""The types every point tracker shares (pixel conventions in ``kubm.perception.tracking``):
tracks, simulator ground truth per frame, the tracker protocol and the input checks. The
backends import these, and the factory in ``tracking`` imports the backends, so the types
live here to keep the imports one-way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["FrameAux", "PointTracker", "Tracks", "check_frames", "check_queries"]


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
