"""Observable task context: goal information taken from the first frame's image.

Goal-conditioned tasks (relocate: where the target is) need information that the action
and the object flow lack. It must be observable at test time, so it comes from the first
frame's image only, never from privileged simulator state: the same function runs on the
demos (encode) and on the first observed frame (evaluate).

Task setting ``context`` (config schema ``suites.*.tasks.*.context``)::

    type: none            -> (0,)
    type: color_centroid  -> (2,) centroid (x/W, y/H) of the largest connected component of
                             pixels within [hsv_low, hsv_high] (OpenCV HSV: H 0-179, S, V
                             0-255; hsv_low H > hsv_high H wraps around red)
    type: seg_centroid    -> (2,) centroid (x/W, y/H) of the pixels whose id is in seg_ids

Coordinates are pixel xy with pixel centres at integers divided by the image size, the
same normalisation as the flow autoencoder's input (track stage convention).
"""

from __future__ import annotations

import cv2
import numpy as np
from kubm.errors import DataError

TYPES = ("none", "color_centroid", "seg_centroid")


class ContextError(DataError):
    """The configured context cannot be extracted; the message names the setting to fix."""


def context_spec(settings: dict) -> dict:
    """The task's ``context`` setting with its type filled in (absent -> none)."""
    spec = dict(settings.get("context") or {})
    spec.setdefault("type", "none")
    if spec["type"] not in TYPES:
        raise ContextError(f"context.type {spec['type']!r} is not allowed; allowed values: {list(TYPES)}")
    return spec


def context_dim(settings: dict) -> int:
    return 0 if context_spec(settings)["type"] == "none" else 2


def _centroid(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() / width, ys.mean() / height], dtype=np.float32)


def hsv_mask(rgb: np.ndarray, low, high) -> np.ndarray:
    """Bool mask of RGB pixels within [low, high] in OpenCV HSV (hue range may wrap)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if lo[0] <= hi[0]:
        return cv2.inRange(hsv, lo, hi) > 0
    # Hue wraps (e.g. red: 170..10): union of [lo_h, 179] and [0, hi_h].
    a = cv2.inRange(hsv, lo, np.array([179, hi[1], hi[2]]))
    b = cv2.inRange(hsv, np.array([0, lo[1], lo[2]]), hi)
    return (a | b) > 0


def largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def extract_context(settings: dict, rgb0: np.ndarray, seg0: np.ndarray | None, width: int, height: int,
                    *, task_id: str | None = None) -> np.ndarray:
    """(d_c,) float32 context from the first frame ``rgb0`` [H,W,3] uint8 RGB (and ``seg0``
    [H,W] for seg_centroid). ``settings`` is the task's settings dict (TaskConfig.settings)."""
    spec = context_spec(settings)
    kind = spec["type"]
    where = f"task {task_id}" if task_id else "this task"
    if kind == "none":
        return np.zeros(0, dtype=np.float32)
    rgb0 = np.asarray(rgb0)
    if rgb0.shape[:2] != (height, width):
        raise ContextError(f"first frame is {rgb0.shape[1]}x{rgb0.shape[0]} but the camera is {width}x{height} "
                           f"({where})")
    if kind == "color_centroid":
        if "hsv_low" not in spec or "hsv_high" not in spec:
            raise ContextError(f"context.type color_centroid needs context.hsv_low and context.hsv_high "
                               f"(OpenCV HSV, H 0-179) for {where}")
        if rgb0.ndim != 3 or rgb0.shape[2] != 3 or rgb0.dtype != np.uint8:
            raise ContextError(f"color_centroid needs an [H,W,3] uint8 RGB frame, got {rgb0.shape} {rgb0.dtype}")
        mask = largest_component(hsv_mask(rgb0, spec["hsv_low"], spec["hsv_high"]))
        if not mask.any():
            raise ContextError(f"goal marker not found in the first frame; check context.hsv_low/hsv_high "
                               f"({spec['hsv_low']}..{spec['hsv_high']}) for {where}")
        return _centroid(mask, width, height)
    # seg_centroid
    if not spec.get("seg_ids"):
        raise ContextError(f"context.type seg_centroid needs context.seg_ids for {where}")
    if seg0 is None:
        raise ContextError(f"context.type seg_centroid needs the first frame's segmentation image ({where})")
    mask = np.isin(np.asarray(seg0), np.asarray(spec["seg_ids"]))
    if not mask.any():
        raise ContextError(f"goal marker not found in the first frame: no pixel with seg id in {spec['seg_ids']}; "
                           f"check context.seg_ids for {where}")
    return _centroid(mask, width, height)
