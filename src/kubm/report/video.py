"""QC videos: frames with a mask tint and tracked points drawn on top, written as mp4."""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

MASK_TINT = np.array([255, 0, 255], dtype=np.float32)


def overlay(rgb: np.ndarray, mask: np.ndarray | None = None, points: np.ndarray | None = None,
            visible: np.ndarray | None = None, pred_points: np.ndarray | None = None, scale: int = 3) -> np.ndarray:
    """One frame, upscaled `scale`x so points stay legible at 128².

    Visible points green, occluded red; predicted points (if any) blue.
    """
    img = rgb.astype(np.float32)
    if mask is not None:
        img[mask] = 0.6 * img[mask] + 0.4 * MASK_TINT
    img = cv2.resize(img.clip(0, 255).astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(img)
    for pts, colours in ((points, visible), (pred_points, None)):
        if pts is None:
            continue
        for k, (x, y) in enumerate(np.asarray(pts)):
            if not np.isfinite([x, y]).all():
                continue
            if colours is None:
                colour = (60, 120, 255)
            else:
                colour = (0, 220, 0) if colours[k] else (230, 30, 30)
            cv2.circle(img, (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5))), 1, colour, -1)
    return img


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=1: 128·3 is not a multiple of 16, and resizing would blur the QC view.
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)
    return path
