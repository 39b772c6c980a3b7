"""Pyramidal Lucas-Kanade point tracking (OpenCV) with a forward-backward visibility check.

Frame to frame on grayscale. A point stays visible while its forward track, tracked back to
the previous frame, returns within `fb_thresh` px, both LK calls report success, and it is
inside the frame. A lost point keeps its last position (reported invisible) and is no
longer tracked.

Re-seeding (reseed=True): while a point is lost it carries a predicted position, its last
position plus the per-frame median flow of the points tracked successfully since it was lost
(dead reckoning). When that prediction falls inside the current frame's object mask, the
point is re-seeded there (visible again) and LK tracking resumes from it. The mask comes
from `mask=` ([H,W] bool; [T,H,W] for track) when given, else from aux.seg ∈ aux.object_ids;
without either, lost points stay lost.

Offline `track` is exactly the online loop, so both APIs give the same tracks.
"""

from __future__ import annotations

import numpy as np

from kubm.perception.errors import BackendUnavailable
from kubm.perception.tracking_types import FrameAux, Tracks, check_frames, check_queries

__all__ = ["OpenCVLKTracker"]

try:
    import cv2
except ImportError:  # pragma: no cover - opencv is a core dependency
    cv2 = None


class OpenCVLKTracker:
    """levels: pyramid levels above full resolution (cv2 maxLevel); win: LK window in px."""

    auto_reason: str | None = None

    def __init__(self, win: int = 15, levels: int = 3, fb_thresh: float = 1.0, reseed: bool = True):
        if cv2 is None:
            raise BackendUnavailable("opencv_lk needs OpenCV: pip install opencv-python-headless")
        self.win, self.levels, self.fb_thresh, self.reseed = int(win), int(levels), float(fb_thresh), bool(reseed)
        self._lk = dict(
            winSize=(self.win, self.win), maxLevel=self.levels,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        )
        self._gray = None

    def describe(self) -> dict:
        d = {"backend": "opencv_lk", "model": f"cv2.calcOpticalFlowPyrLK (opencv {cv2.__version__})",
             "checkpoint": None,
             "settings": {"win": self.win, "levels": self.levels, "fb_thresh": self.fb_thresh,
                          "reseed": self.reseed}}
        if self.auto_reason:
            d["auto_reason"] = self.auto_reason
        return d

    # -------------------------------------------------------------- internals
    @staticmethod
    def _to_gray(frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be [H,W,3] uint8, got {frame.shape} {frame.dtype}")
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)

    def _init(self, frame: np.ndarray, q: np.ndarray) -> None:
        self._gray = self._to_gray(frame)
        self._xy = q[:, 1:].astype(np.float32).copy()
        self._active = q[:, 0] == 0  # points start being tracked at their query frame
        self._vis = self._active.copy()
        self._pred = self._xy.copy()  # dead-reckoned position of lost points
        self._q = q
        self._t = 0

    def _inside(self, xy: np.ndarray) -> np.ndarray:
        H, W = self._gray.shape
        return (xy[:, 0] >= -0.5) & (xy[:, 0] < W - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < H - 0.5)

    def _step(self, frame: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        gray = self._to_gray(frame)
        if gray.shape != self._gray.shape:
            raise ValueError(f"frame size changed from {self._gray.shape} to {gray.shape}")
        live = np.flatnonzero(self._active & self._vis)
        flow = np.zeros(2, np.float32)
        if live.size:
            p0 = self._xy[live].reshape(-1, 1, 2)
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, p0, None, **self._lk)
            pb, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._gray, p1, None, **self._lk)
            p0, p1, pb = p0[:, 0], p1[:, 0], pb[:, 0]
            fb = np.linalg.norm(pb - p0, axis=1)
            ok = (st1[:, 0] == 1) & (st2[:, 0] == 1) & (fb < self.fb_thresh) & self._inside(p1)
            self._xy[live[ok]] = p1[ok]
            lost_now = live[~ok]
            self._vis[lost_now] = False
            self._pred[lost_now] = self._xy[lost_now]
            if ok.any():
                flow = np.median(p1[ok] - p0[ok], axis=0)  # median: robust to bad tracks
        lost = np.flatnonzero(self._active & ~self._vis)
        self._pred[lost] += flow
        if self.reseed and mask is not None and lost.size:
            m = np.asarray(mask, bool)
            pred = self._pred[lost]
            H, W = m.shape
            c = np.clip(np.rint(pred[:, 0]).astype(int), 0, W - 1)
            r = np.clip(np.rint(pred[:, 1]).astype(int), 0, H - 1)
            back = self._inside(pred) & m[r, c]
            self._xy[lost[back]] = pred[back]
            self._vis[lost[back]] = True
        self._gray = gray
        self._t += 1
        # Points whose query frame is now: start tracking at their query position.
        new = ~self._active & (self._q[:, 0] == self._t)
        self._active |= new
        self._vis |= new
        return self._xy.copy(), self._vis & self._active

    @staticmethod
    def _mask(aux: FrameAux | None, mask: np.ndarray | None) -> np.ndarray | None:
        if mask is not None:
            return mask
        return aux.object_mask() if aux is not None else None

    # -------------------------------------------------------------- API
    def start(self, frame: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None) -> None:
        self._init(frame, check_queries(queries, online=True))

    def update(self, frame: np.ndarray, aux: FrameAux | None = None,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._gray is None:
            raise RuntimeError("call start() before update()")
        return self._step(frame, self._mask(aux, mask))

    def track(self, frames: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None,
              masks: np.ndarray | None = None) -> Tracks:
        """Offline = the online loop. aux (stacked) or masks [T,H,W] feed re-seeding."""
        frames = check_frames(frames)
        q = check_queries(queries)
        T = len(frames)
        if np.any((q[:, 0] < 0) | (q[:, 0] >= T) | (q[:, 0] != np.round(q[:, 0]))):
            raise ValueError(f"query frames must be integers in [0, {T})")
        self._init(frames[0], q)
        xy = np.zeros((T, len(q), 2), np.float32)
        vis = np.zeros((T, len(q)), bool)
        xy[0], vis[0] = self._xy, self._vis
        for t in range(1, T):
            m = masks[t] if masks is not None else (aux.at(t).object_mask() if aux is not None else None)
            xy[t], vis[t] = self._step(frames[t], m)
        return Tracks(xy, vis, q)
