"""Object segmentation: frames [T,H,W,3] uint8 + a prompt -> masks [T,H,W] bool.

Backends (docs/design.md, "Perception"), one module each (``segmentation_<backend>``, with the
shared types in ``segmentation_types``):
- ``sim``:  the renderer's per-body segmentation buffer (ground truth).
- ``sam2``: the ``sam2`` video predictor, prompted with a box / points / mask on one frame.
- ``sam3``: the ``sam3`` video predictor, prompted with text ("blue ball"); CUDA only.

``make_segmenter("auto", cfg)`` prefers sam3, then sam2, then sim, and says why it
skipped each. A backend named explicitly that cannot run raises ``BackendUnavailable``;
nothing falls back silently. Model packages are imported lazily: ``sam2`` initialises
Hydra on import and ``sam3`` needs torchvision/triton, which a CPU install lacks.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from kubm.errors import ConfigError
from kubm.perception.errors import BackendUnavailable
from kubm.perception.segmentation_types import (  # noqa: F401
    RANDOM,
    SegPrompt,
    Segmenter,
    _cuda_available,
    _has_package,
    _resolve_device,
    mask_iou,
)
from kubm.perception.weights import fetch_command, find_checkpoint

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "Sam2Segmenter",
    "Sam3Segmenter",
    "SegPrompt",
    "Segmenter",
    "SimSegmenter",
    "make_segmenter",
    "mask_iou",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sim", "sam2", "sam3")
SAM2_DEFAULTS = {"model": "tiny", "image_size": 256, "checkpoint": None}
SAM3_DEFAULTS = {"checkpoint": None}

# Backends live in segmentation_sim / _sam2 / _sam3 and are imported when first used.
_LAZY = {
    "SimSegmenter": "kubm.perception.segmentation_sim",
    "Sam2Segmenter": "kubm.perception.segmentation_sam2",
    "Sam3Segmenter": "kubm.perception.segmentation_sam3",
    "find_bpe_vocab": "kubm.perception.segmentation_sam3",
    "SAM2_CONFIGS": "kubm.perception.segmentation_sam2",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _why_not_sam3(cfg: dict, device: str) -> str | None:
    """Why auto skips sam3 (None: worth building)."""
    if not device.startswith("cuda") or not _cuda_available():
        return "no CUDA GPU (sam3 is CUDA-only)"
    if not _has_package("sam3"):
        return "package sam3 not installed (optional GPU extra)"
    if cfg.get("checkpoint") == RANDOM:
        return "checkpoint: random is not supported for sam3"
    if find_checkpoint("sam3", cfg.get("checkpoint")) is None:
        return f"checkpoint sam3.pt not found (gated; {fetch_command('sam3')})"
    return None


def _why_not_sam2(cfg: dict, device: str) -> str | None:
    if not _has_package("sam2"):
        return "package sam2 not installed"
    if cfg.get("checkpoint") == RANDOM:
        return "checkpoint: random is only used when segment.backend is sam2 explicitly"
    model = f"sam2.1_hiera_{cfg.get('model', 'tiny')}"
    if find_checkpoint(model, cfg.get("checkpoint")) is None:
        return f"checkpoint {model}.pt not found (fetch: {fetch_command(model)})"
    return None


def make_segmenter(name: str = "auto", cfg: dict | None = None) -> Segmenter:
    """Build the segmenter ``name`` from the ``segment`` config section.

    cfg: ``{"sam2": {"model", "image_size", "checkpoint"}, "sam3": {"checkpoint"},
    "device": "auto"|"cpu"|"cuda", "object_ids": [...] (sim), "weights": {model key: path}}``,
    all optional. A backend's own ``checkpoint`` wins over ``weights[<model key>]``.
    The result's ``selection`` attribute (also in ``describe()``) records what was asked
    for, what was chosen and why other backends were skipped.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown segment backend {name!r}; one of {BACKENDS}")
    cfg = dict(cfg or {})
    device = _resolve_device(cfg.get("device", "auto"))
    weights = cfg.get("weights") or {}
    s2 = {**SAM2_DEFAULTS, **(cfg.get("sam2") or {})}
    s2["checkpoint"] = s2["checkpoint"] or weights.get(f"sam2.1_hiera_{s2['model']}")
    s3 = {**SAM3_DEFAULTS, **(cfg.get("sam3") or {})}
    s3["checkpoint"] = s3["checkpoint"] or weights.get("sam3")
    object_ids = cfg.get("object_ids", (cfg.get("sim") or {}).get("object_ids"))
    from kubm.perception.segmentation_sam2 import Sam2Segmenter
    from kubm.perception.segmentation_sam3 import Sam3Segmenter
    from kubm.perception.segmentation_sim import SimSegmenter

    builders = {
        "sam3": lambda: Sam3Segmenter(checkpoint=s3["checkpoint"], device=device),
        "sam2": lambda: Sam2Segmenter(model=s2["model"], image_size=s2["image_size"],
                                      checkpoint=s2["checkpoint"], device=device),
        "sim": lambda: SimSegmenter(object_ids),
    }
    skipped: dict[str, str] = {}
    if name != "auto":
        seg = builders[name]()  # explicit: BackendUnavailable propagates, never a fallback
    else:
        seg = None
        for backend, why_not in (("sam3", lambda: _why_not_sam3(s3, device)),
                                 ("sam2", lambda: _why_not_sam2(s2, device))):
            reason = why_not()
            if reason is None:
                try:
                    seg = builders[backend]()
                    break
                except BackendUnavailable as e:
                    reason = str(e).splitlines()[0]
            skipped[backend] = reason
        if seg is None:
            seg = builders["sim"]()
    seg.selection = {"requested": name, "chosen": seg.name, "skipped": skipped}
    msg = f"segment backend: {seg.name} (requested {name})"
    msg += "".join(f"; skipped {b}: {r}" for b, r in skipped.items())
    print(msg, file=sys.stderr, flush=True)  # the choice is part of the run's story: always shown
    return seg
