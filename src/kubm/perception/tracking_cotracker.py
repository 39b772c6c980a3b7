"""CoTracker3 (the `cotracker` package, installed from the napari-cotrack wheel; CC-BY-NC 4.0).

mode="offline": `CoTrackerPredictor` sees the whole clip at once (window 60, sliding).
mode="online": `CoTrackerOnlinePredictor`, window 16 frames, moving by step = 8 frames.

Online latency. The online model only runs on full steps, fed as in upstream's
online_demo.py: the first run needs 2*step = 16 frames, then one run every `step` frames on
the last 2*step frames. `update()` buffers frames and returns the newest positions the model
has produced, so its answer lags the frame just given by up to 2*step-1 = 15 frames at the
start (the query positions are returned, visible, until the first run) and then by up to
step-1 = 7 frames. `lag` says by how many frames the last answer lags. `track()` in online
mode runs the same loop and then one final partial window, so it covers every frame.

mode="offline" also offers start/update: each update re-runs the offline model on all frames
since start (no lag, cost growing with the clip length: meant for GPUs).

model_resolution: frames are resized to it inside the predictor. CoTracker3's weights do not
depend on it (it only normalises coordinates), so the model is built as usual and its
`model_resolution` and the predictor's `interp_shape` are set; e.g. (128, 128) runs about 2x
faster on CPU than the native (384, 512).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from kubm.perception.errors import BackendUnavailable
from kubm.perception.tracking_types import FrameAux, Tracks, check_frames, check_queries

__all__ = ["CoTrackerTracker", "RANDOM"]

log = logging.getLogger(__name__)

RANDOM = "random"  # test-only checkpoint sentinel
INSTALL = "pip install --no-deps --ignore-requires-python napari-cotrack==0.1.7  # provides `cotracker`"


def _sha16(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


class CoTrackerTracker:
    auto_reason: str | None = None

    def __init__(
        self,
        mode: str = "offline",
        checkpoint: str | Path | None = None,
        model_resolution: tuple[int, int] = (384, 512),
        device: str = "cpu",
        window_len: int | None = None,
    ):
        if mode not in ("offline", "online"):
            raise ValueError(f"cotracker3 mode must be 'offline' or 'online', got {mode!r}")
        try:
            import torch
            from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor
        except ImportError as e:
            raise BackendUnavailable(f"cotracker3 needs the `cotracker` package ({e}); install it with: {INSTALL}") from e
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"cotracker3 asked for device {device!r} but torch has no CUDA here "
                                     f"(torch {torch.__version__}); use device: cpu")
        self.mode, self.device = mode, str(device)
        self.model_key = f"cotracker3_{mode}"
        mr = tuple(int(v) for v in model_resolution)
        if len(mr) != 2 or any(v < 32 or v % 8 for v in mr):
            raise ValueError(f"model_resolution must be (H, W), multiples of 8 and >= 32; got {model_resolution}")
        self.model_resolution = mr

        if checkpoint == RANDOM:
            self.checkpoint = None
            log.warning("!" * 72 + f"\n!! cotracker3 ({mode}) with RANDOM weights (checkpoint: random): "
                        "tracks are meaningless. For tests only.\n" + "!" * 72)
        else:
            from kubm.perception.weights import CheckpointNotFound, resolve_checkpoint

            try:
                self.checkpoint = resolve_checkpoint(self.model_key, checkpoint)
            except CheckpointNotFound as e:
                raise BackendUnavailable(f"cotracker3 ({mode}) cannot run: {e}\n"
                                         "(tests may set checkpoint: random)") from e
        cls = CoTrackerPredictor if mode == "offline" else CoTrackerOnlinePredictor
        self.window_len = int(window_len or (60 if mode == "offline" else 16))
        try:
            self._pred = cls(checkpoint=None if self.checkpoint is None else str(self.checkpoint),
                             window_len=self.window_len)
        except Exception as e:
            from kubm.perception.weights import raise_if_damaged

            raise_if_damaged(self.model_key, self.checkpoint, e)  # a truncated download names the file
            if not isinstance(e, RuntimeError):
                raise
            # state-dict mismatch, e.g. the offline file in the online model
            raise RuntimeError(f"{self.checkpoint} does not fit the CoTracker3 {mode} model (offline "
                               f"and online use different files: scaled_{mode}.pth): {e}") from e
        self._pred.model.model_resolution = mr
        self._pred.interp_shape = mr
        self._pred.to(self.device).eval()
        self.step = self.window_len // 2  # online window stride
        self._sha = None
        self._frames = None
        self.lag = 0

    def describe(self) -> dict:
        if self._sha is None:
            self._sha = RANDOM if self.checkpoint is None else _sha16(self.checkpoint)
        d = {"backend": "cotracker3", "model": self.model_key,
             "checkpoint": RANDOM if self.checkpoint is None else str(self.checkpoint),
             "checkpoint_sha256": self._sha,
             "settings": {"mode": self.mode, "model_resolution": list(self.model_resolution),
                          "device": self.device, "window_len": self.window_len,
                          **({"step": self.step} if self.mode == "online" else {})}}
        if self.auto_reason:
            d["auto_reason"] = self.auto_reason
        return d

    # -------------------------------------------------------------- tensors
    def _video(self, frames) -> "torch.Tensor":  # noqa: F821
        v = self._torch.from_numpy(np.ascontiguousarray(np.stack(frames)))
        return v.permute(0, 3, 1, 2)[None].float().to(self.device)  # [1,T,3,H,W], 0..255

    def _queries(self, q: np.ndarray) -> "torch.Tensor":  # noqa: F821
        return self._torch.from_numpy(q.copy())[None].to(self.device)

    @staticmethod
    def _np(tracks, vis) -> tuple[np.ndarray, np.ndarray]:
        return tracks[0].float().cpu().numpy(), vis[0].cpu().numpy().astype(bool)

    # -------------------------------------------------------------- online machinery
    def _online_init(self, frame: np.ndarray, q: np.ndarray) -> None:
        with self._torch.inference_mode():
            self._pred(self._video([frame]), is_first_step=True, queries=self._queries(q))
        self._frames = [frame]  # frames from the model's window start (online_ind) on
        self._n = 1  # frames seen
        self._xy_hist = np.broadcast_to(q[None, :, 1:], (1, len(q), 2)).copy()
        self._vis_hist = (q[:, 0] == 0)[None].copy()

    def _online_run(self) -> None:
        with self._torch.inference_mode():
            tr, vis = self._pred(self._video(self._frames[-2 * self.step:]))
        self._xy_hist, self._vis_hist = self._np(tr, vis)  # every frame so far
        self._frames = self._frames[-self.step:]  # the model's window moved by one step

    def _online_push(self, frame: np.ndarray) -> None:
        self._frames.append(frame)
        self._n += 1
        if self._n % self.step == 0 and self._n >= 2 * self.step:
            self._online_run()

    # -------------------------------------------------------------- API
    def track(self, frames: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None) -> Tracks:
        frames = check_frames(frames)
        q = check_queries(queries)
        T = len(frames)
        if np.any((q[:, 0] < 0) | (q[:, 0] >= T)):
            raise ValueError(f"query frames must lie in [0, {T})")
        if self.mode == "offline":
            with self._torch.inference_mode():
                tr, vis = self._pred(self._video(frames), queries=self._queries(q))
            xy, visible = self._np(tr, vis)
        else:
            self._online_init(frames[0], q)
            for f in frames[1:]:
                self._online_push(f)
            if len(self._xy_hist) < T:  # the last partial window, as upstream's demo does
                self._online_run()
            xy, visible = self._xy_hist[:T].copy(), self._vis_hist[:T].copy()
            n = np.arange(len(q))  # query frames answer the query itself, as offline does
            xy[q[:, 0].astype(int), n] = q[:, 1:]
            visible[q[:, 0].astype(int), n] = True
        return Tracks(xy, visible, q)

    def start(self, frame: np.ndarray, queries: np.ndarray, aux: FrameAux | None = None) -> None:
        q = check_queries(queries, online=True)
        check_frames(np.asarray(frame)[None])
        self._q = q
        self.lag = 0
        if self.mode == "online":
            self._online_init(frame, q)
        else:
            self._frames = [frame]

    def update(self, frame: np.ndarray, aux: FrameAux | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._frames is None:
            raise RuntimeError("call start() before update()")
        if self.mode == "offline":
            self._frames.append(frame)
            tr = self.track(np.stack(self._frames), self._q)
            return tr.xy[-1], tr.visible[-1]
        self._online_push(frame)
        self.lag = self._n - len(self._xy_hist)
        return self._xy_hist[-1].copy(), self._vis_hist[-1].copy()
