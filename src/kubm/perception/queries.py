"""Query points for the point trackers, sampled inside the object's first-frame mask.

A grid over the whole frame keeps almost no points on a small object (notes/perception.md),
so queries are drawn from the mask itself: eroded (so a point sits on the object, not on
its silhouette, where trackers drift onto the background) and spread out by
farthest-point sampling.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["sample_queries"]

JITTER = 0.25  # px; keeps each point inside its source pixel (round() gives it back)


def _farthest_points(xy: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n rows of xy [M,2] (M >= n) chosen greedily to be far from each other."""
    idx = np.empty(n, np.int64)
    idx[0] = rng.integers(len(xy))
    d2 = np.sum((xy - xy[idx[0]]) ** 2, axis=1)
    for i in range(1, n):
        idx[i] = int(np.argmax(d2))
        d2 = np.minimum(d2, np.sum((xy - xy[idx[i]]) ** 2, axis=1))
    return idx


def sample_queries(mask: np.ndarray, n: int = 256, seed: int = 0, erode_px: int = 2,
                   frame: int = 0) -> np.ndarray:
    """n query points (t, x, y) float32 [n,3] inside ``mask`` [H,W], deterministic given seed.

    x = column, y = row, in pixel-centre coordinates (pixel (r, c) is centred at x=c, y=r),
    with a seeded sub-pixel jitter of at most ``JITTER`` px. The mask is eroded by
    ``erode_px`` first; if that empties it the un-eroded mask is used. A mask with fewer
    than n pixels is sampled with replacement (every pixel before any twice), the jitter
    keeping the points distinct.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H,W], got shape {mask.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("cannot sample queries: the mask is empty (the object is not visible in the "
                         "query frame, or the segmenter missed it)")
    pool = mask
    if erode_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        eroded = cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        if eroded.any():
            pool = eroded
    rows, cols = np.nonzero(pool)
    xy = np.stack([cols, rows], axis=1).astype(np.float64)
    rng = np.random.default_rng(seed)
    if len(xy) >= n:
        idx = _farthest_points(xy, n, rng)
    else:
        reps = -(-n // len(xy))
        idx = np.concatenate([rng.permutation(len(xy)) for _ in range(reps)])[:n]
    pts = xy[idx] + rng.uniform(-JITTER, JITTER, size=(n, 2))
    out = np.empty((n, 3), np.float32)
    out[:, 0] = frame
    out[:, 1:] = pts
    return out
