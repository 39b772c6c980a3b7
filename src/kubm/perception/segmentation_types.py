"""The types and helpers every segmentation backend shares: the prompt, the segmenter
protocol, mask IoU, input checks and the checkpoint/device helpers of the SAM backends."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from kubm.perception.errors import BackendUnavailable
from kubm.perception.weights import CheckpointNotFound, resolve_checkpoint


RANDOM = "random"  # test-only checkpoint sentinel


@dataclass
class SegPrompt:
    """What to segment, given on frame ``frame``. Pixel coordinates are (x=col, y=row)."""

    frame: int = 0
    text: str | None = None  # sam3
    points: np.ndarray | None = None  # [K,2] xy px
    labels: np.ndarray | None = None  # [K] 1 = foreground, 0 = background
    box: tuple[float, float, float, float] | None = None  # xyxy px
    mask: np.ndarray | None = None  # [H,W] bool


@runtime_checkable
class Segmenter(Protocol):
    name: str

    def segment(self, frames: np.ndarray, prompt: SegPrompt) -> np.ndarray: ...

    def describe(self) -> dict: ...


# --------------------------------------------------------------------------- helpers


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame IoU of two [T,H,W] (or [H,W]) masks; 1.0 where both are empty."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    inter = (pred & gt).sum(axis=(1, 2))
    union = (pred | gt).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1)).astype(np.float64)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T,H,W,3] uint8, got {frames.shape} {frames.dtype}")
    return frames


def _check_prompt_frame(prompt: SegPrompt, n_frames: int) -> int:
    if not 0 <= prompt.frame < n_frames:
        raise ValueError(f"prompt.frame={prompt.frame} outside the video's {n_frames} frames")
    return int(prompt.frame)


def _write_jpegs(frames: np.ndarray, folder: str) -> None:
    # SAM 2 / SAM 3 init_state only reads a folder of <index>.jpg files.
    for t, f in enumerate(frames):
        ok = cv2.imwrite(os.path.join(folder, f"{t:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f"could not write frame {t} to {folder}")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha16(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (cached: checkpoints are large)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()[:16]
    return _SHA_CACHE[key]


def _has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if _cuda_available() else "cpu"
    return device


def _resolve_or_unavailable(backend: str, model: str, checkpoint: str | None) -> Path:
    try:
        return resolve_checkpoint(model, checkpoint)
    except CheckpointNotFound as e:
        raise BackendUnavailable(f"{backend}: {e}") from e
