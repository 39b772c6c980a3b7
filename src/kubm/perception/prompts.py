"""Ground-truth object masks and the first-frame segmentation prompt derived from them:
shared by the segment stage (offline, every demo) and the evaluator (online, every episode)."""

from __future__ import annotations

import numpy as np

from kubm.errors import PerceptionError
from kubm.perception.queries import sample_queries
from kubm.perception.segmentation import SegPrompt

__all__ = ["first_frame_prompt", "ground_truth_masks"]


def ground_truth_masks(seg: np.ndarray, object_ids: list[int]) -> np.ndarray:
    return np.isin(seg, np.asarray(object_ids, dtype=seg.dtype))


def first_frame_prompt(gt0: np.ndarray, text: str, seed: int) -> SegPrompt:
    """Box + three positive points from the first frame's object mask, and the text prompt."""
    ys, xs = np.nonzero(gt0)
    if len(xs) == 0:
        raise PerceptionError("the manipulated object is not visible in the first frame; move the camera (task camera.*)")
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    pts = sample_queries(gt0, n=3, seed=seed, erode_px=1)[:, 1:]
    return SegPrompt(frame=0, text=text, points=pts, labels=np.ones(len(pts), dtype=np.int64), box=box)
