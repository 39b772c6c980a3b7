"""Query points for the point trackers, sampled inside the object's first-frame mask.

A grid over the whole frame keeps almost no points on a small object (docs/design.md, "Perception"),
so queries are drawn from the mask itself: eroded (so a point sits on the object, not on
its silhouette, where trackers drift onto the background) and spread out by
farthest-point sampling (``sample_queries``) or laid out on a quantile grid of the mask
(``ordered_queries``, what the tracker and the flow autoencoder use).

Why the grid: the flow autoencoder reads the 256 points as an ordered vector, so point k
must be the same part of the object in every episode. Farthest-point samples from a
random start, even re-sorted in raster order, put index k on a different part of the
object each episode, and the autoencoder then memorises training episodes instead of
learning the object's motion (door: 13.9 px test error against 0.67 px on training).
On the grid, point (i, j) is the j-th column quantile of the i-th equal-count row band
of the mask: the same relative place on the object whatever its position or size.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ordered_queries", "sample_queries"]

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


def _pool(mask: np.ndarray, erode_px: int) -> np.ndarray:
    """Pixel centres (x, y) [M,2] of the eroded mask (the raw mask if erosion empties it)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H,W], got shape {mask.shape}")
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
    rows, cols = np.nonzero(pool)  # row-major: sorted by row, then column
    return np.stack([cols, rows], axis=1).astype(np.float64)


def _as_queries(pts: np.ndarray, frame: int) -> np.ndarray:
    out = np.empty((len(pts), 3), np.float32)
    out[:, 0] = frame
    out[:, 1:] = pts
    return out


def ordered_queries(mask: np.ndarray, n: int = 256, seed: int = 0, erode_px: int = 2,
                    frame: int = 0) -> np.ndarray:
    """n query points (t, x, y) float32 [n,3] on a quantile grid of ``mask`` [H,W], in a
    fixed order: round(√n) row bands of equal pixel count (top to bottom), and in band i
    its k_i column quantiles (left to right), k_i summing to n. Deterministic given seed
    (a seeded sub-pixel jitter of at most ``JITTER`` px keeps repeated pixels distinct).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    xy = _pool(mask, erode_px)
    M = len(xy)
    n_bands = max(1, min(int(round(np.sqrt(n))), n))
    per_band = [len(b) for b in np.array_split(np.arange(n), n_bands)]
    bounds = np.linspace(0, M, n_bands + 1)
    picked = []
    for b, k in enumerate(per_band):
        lo, hi = int(np.floor(bounds[b])), max(int(np.floor(bounds[b + 1])), int(np.floor(bounds[b])) + 1)
        band = xy[lo:min(hi, M)]
        band = band[np.lexsort((band[:, 1], band[:, 0]))]  # by column, then row
        q = ((np.arange(k) + 0.5) / k * len(band)).astype(np.int64)
        picked.append(band[np.minimum(q, len(band) - 1)])
    pts = np.concatenate(picked)
    rng = np.random.default_rng(seed)
    return _as_queries(pts + rng.uniform(-JITTER, JITTER, size=(n, 2)), frame)


def sample_queries(mask: np.ndarray, n: int = 256, seed: int = 0, erode_px: int = 2,
                   frame: int = 0) -> np.ndarray:
    """n query points (t, x, y) float32 [n,3] inside ``mask`` [H,W], deterministic given seed.

    x = column, y = row, in pixel-centre coordinates (pixel (r, c) is centred at x=c, y=r),
    with a seeded sub-pixel jitter of at most ``JITTER`` px. The mask is eroded by
    ``erode_px`` first; if that empties it the un-eroded mask is used. A mask with fewer
    than n pixels is sampled with replacement (every pixel before any twice), the jitter
    keeping the points distinct.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    xy = _pool(mask, erode_px)
    rng = np.random.default_rng(seed)
    if len(xy) >= n:
        idx = _farthest_points(xy, n, rng)
    else:
        reps = -(-n // len(xy))
        idx = np.concatenate([rng.permutation(len(xy)) for _ in range(reps)])[:n]
    return _as_queries(xy[idx] + rng.uniform(-JITTER, JITTER, size=(n, 2)), frame)
