"""Segmentation from the renderer's per-body buffer (ground truth): the ``sim`` backend."""

from __future__ import annotations


import numpy as np

from kubm.perception.segmentation_types import SegPrompt, _check_frames


class SimSegmenter:
    """Ground-truth masks from the renderer's per-body id maps (``Observation.seg``)."""

    name = "sim"
    selection: dict | None = None

    def __init__(self, object_ids: list[int] | tuple[int, ...] | None = None):
        self.object_ids = None if object_ids is None else [int(i) for i in object_ids]

    def segment_from_ids(self, seg: np.ndarray, object_ids=None) -> np.ndarray:
        """[T,H,W] (or [H,W]) id maps -> bool masks of the pixels whose id is an object id."""
        ids = self.object_ids if object_ids is None else [int(i) for i in object_ids]
        if not ids:
            raise ValueError("sim segmenter has no object ids: pass object_ids (env.object_seg_ids)")
        return np.isin(np.asarray(seg), ids)

    def segment(self, frames: np.ndarray, prompt: SegPrompt | None = None, *, seg: np.ndarray | None = None,
                object_ids=None) -> np.ndarray:
        # The prompt is ignored: the object ids already say what the object is.
        if seg is None:
            raise ValueError(
                "sim segmenter needs the renderer's segmentation: call segment(frames, prompt, seg=<[T,H,W] "
                "per-body id maps>) — the episode store's seg array — or use segment.backend sam2/sam3"
            )
        frames = _check_frames(frames)
        seg = np.asarray(seg)
        if seg.shape != frames.shape[:3]:
            raise ValueError(f"seg {seg.shape} does not match frames {frames.shape[:3]}")
        return self.segment_from_ids(seg, object_ids)

    def describe(self) -> dict:
        return {"backend": "sim", "model": "renderer segmentation", "checkpoint": None,
                "checkpoint_sha256": None, "object_ids": self.object_ids, "selection": self.selection}
