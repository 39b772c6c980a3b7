"""Object segmentation: frames [T,H,W,3] uint8 + a prompt -> masks [T,H,W] bool.

Backends (docs/design.md, "Perception"):
- ``sim``:  the renderer's per-body segmentation buffer (ground truth).
- ``sam2``: the ``sam2`` video predictor, prompted with a box / points / mask on one frame.
- ``sam3``: the ``sam3`` video predictor, prompted with text ("blue ball"); CUDA only.

``make_segmenter("auto", cfg)`` prefers sam3, then sam2, then sim, and says why it
skipped each. A backend named explicitly that cannot run raises ``BackendUnavailable``;
nothing falls back silently. Model packages are imported lazily: ``sam2`` initialises
Hydra on import and ``sam3`` needs torchvision/triton, which a CPU install lacks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from kubm.errors import ConfigError
from kubm.perception.weights import (
    CheckpointNotFound,
    fetch_command,
    find_checkpoint,
    raise_if_damaged,
    resolve_checkpoint,
)

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

# SAM 2.1 configs inside the sam2 package, by model size.
SAM2_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
SAM2_DEFAULTS = {"model": "tiny", "image_size": 256, "checkpoint": None}
SAM3_DEFAULTS = {"checkpoint": None}
RANDOM = "random"  # test-only checkpoint sentinel
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
SAM3_GPU_EXTRA = (
    'pip install sam3==0.1.4 "numpy<2.4" timm ftfy regex pycocotools einops triton '
    "(with a CUDA torch and its matching torchvision), then "
    "pip install --no-deps open_clip_torch for the BPE vocabulary"
)


from kubm.perception.errors import BackendUnavailable  # noqa: E402  (one class for both stages)


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


# --------------------------------------------------------------------------- sim


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


# --------------------------------------------------------------------------- SAM 2


class Sam2Segmenter:
    """SAM 2.1 video predictor, prompted with a mask, or a box and/or points, on one frame."""

    name = "sam2"
    selection: dict | None = None

    def __init__(self, model: str = "tiny", image_size: int = 256, checkpoint: str | None = None,
                 device: str = "cpu"):
        if model not in SAM2_CONFIGS:
            raise ConfigError(f"unknown sam2 model {model!r}; one of {sorted(SAM2_CONFIGS)}")
        if not _has_package("sam2"):
            raise BackendUnavailable(
                "sam2 is not installed: SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation "
                "sam2==1.1.0 hydra-core iopath (see scripts/setup.sh), or use segment.backend: sim")
        device = _resolve_device(device)
        if device.startswith("cuda") and not _cuda_available():
            raise BackendUnavailable(f"sam2: device {device!r} asked for but torch.cuda.is_available() is "
                                     "False; set segment.device: cpu (or auto)")
        self.model, self.image_size, self.device = model, int(image_size), device
        self.config_file = SAM2_CONFIGS[model]
        if checkpoint == RANDOM:
            self.checkpoint = None
            log.warning("!" * 72 + "\n!! sam2 with RANDOM weights (checkpoint: random): masks are meaningless."
                        " For tests only.\n" + "!" * 72)
        else:
            self.checkpoint = _resolve_or_unavailable("sam2", f"sam2.1_hiera_{model}", checkpoint)

        from sam2.build_sam import build_sam2_video_predictor  # lazy: initialises Hydra on import

        try:
            self.predictor = build_sam2_video_predictor(
                config_file=self.config_file,
                ckpt_path=None if self.checkpoint is None else str(self.checkpoint),
                device=device,
                hydra_overrides_extra=[f"++model.image_size={self.image_size}"],
            )
        except Exception as e:
            raise_if_damaged(f"sam2.1_hiera_{model}", self.checkpoint, e)
            raise

    def segment(self, frames: np.ndarray, prompt: SegPrompt, *, seg: np.ndarray | None = None) -> np.ndarray:
        """``seg`` is ignored; accepted so one call fits every backend."""
        import torch

        frames = _check_frames(frames)
        T, H, W = frames.shape[:3]
        f0 = _check_prompt_frame(prompt, T)
        if prompt.mask is None and prompt.box is None and prompt.points is None:
            raise ConfigError("sam2 needs a mask, box or points prompt (text prompts are sam3 only)")
        out = np.zeros((T, H, W), bool)
        with tempfile.TemporaryDirectory(prefix="kubm_sam2_") as d, torch.inference_mode(), \
                warnings.catch_warnings():
            # sam2 built without its CUDA extension warns on every frame; it only skips hole filling.
            warnings.filterwarnings("ignore", message="cannot import name '_C'")
            _write_jpegs(frames, d)
            state = self.predictor.init_state(video_path=d)
            if prompt.mask is not None:  # the richest prompt wins; SAM 2 cannot mix mask and clicks
                mask = np.asarray(prompt.mask, bool)
                if mask.shape != (H, W):
                    raise ValueError(f"prompt.mask {mask.shape} does not match frames {(H, W)}")
                self.predictor.add_new_mask(state, frame_idx=f0, obj_id=1, mask=mask)
            else:
                points = labels = None
                if prompt.points is not None:
                    points = np.asarray(prompt.points, np.float32).reshape(-1, 2)
                    labels = (np.ones(len(points), np.int32) if prompt.labels is None
                              else np.asarray(prompt.labels, np.int32).reshape(-1))
                box = None if prompt.box is None else np.asarray(prompt.box, np.float32)
                self.predictor.add_new_points_or_box(state, frame_idx=f0, obj_id=1, points=points,
                                                     labels=labels, box=box)
            # Forward from the prompt frame; backward too when it is not the first frame.
            for reverse in (False, True) if f0 > 0 else (False,):
                for t, _ids, logits in self.predictor.propagate_in_video(state, start_frame_idx=f0,
                                                                         reverse=reverse):
                    out[t] = (logits[0, 0] > 0).cpu().numpy()
        return out

    def describe(self) -> dict:
        ckpt = self.checkpoint
        return {"backend": "sam2", "model": f"sam2.1_hiera_{self.model}", "config": self.config_file,
                "checkpoint": RANDOM if ckpt is None else str(ckpt),
                "checkpoint_sha256": RANDOM if ckpt is None else _sha16(ckpt),
                "image_size": self.image_size, "device": self.device, "selection": self.selection}


# --------------------------------------------------------------------------- SAM 3


def find_bpe_vocab() -> Path:
    """SAM 3's BPE vocabulary: the sam3 wheel lacks it, open_clip_torch ships the same file."""
    places = []
    for pkg, subdirs in (("sam3", ("assets", "../assets")), ("open_clip", (".",))):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            places.append(f"package {pkg}: not installed")
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for sub in subdirs:
            p = (root / sub / BPE_FILE).resolve()
            if p.is_file():
                return p
            places.append(str(p))
    raise BackendUnavailable(f"sam3: BPE vocabulary {BPE_FILE} not found (checked: {'; '.join(places)}). "
                             "Fix: pip install --no-deps open_clip_torch")


class Sam3Segmenter:
    """SAM 3 video predictor with a text prompt, through its request API.

    Each frame's mask is, by default (``select="best"``), the mask of the object with the
    highest ``out_probs``. SAM 3 reports an object's detection score there, so this follows
    one object id through the video unless a better-scoring one appears. ``select="union"``
    instead ORs every object whose prob > ``prob_thresh`` (for objects SAM 3 splits in parts).
    """

    name = "sam3"
    selection: dict | None = None

    def __init__(self, checkpoint: str | None = None, device: str = "cuda", predictor: Any = None,
                 bpe_path: str | None = None, select: str = "best", prob_thresh: float = 0.5):
        if select not in ("best", "union"):
            raise ValueError(f"select must be 'best' or 'union', got {select!r}")
        self.select, self.prob_thresh = select, float(prob_thresh)
        self.checkpoint: Path | None = None
        self.device = device
        if predictor is not None:  # injected (tests, or a caller-built predictor)
            self.predictor = predictor
            self.checkpoint = None if checkpoint in (None, RANDOM) else Path(checkpoint)
            return
        device = _resolve_device(device)
        if not device.startswith("cuda") or not _cuda_available():
            raise BackendUnavailable(
                f"sam3 needs a CUDA GPU: torch.cuda.is_available() is {_cuda_available()} and device is "
                f"{device!r} (SAM 3 hard-codes CUDA calls); use segment.backend: sam2 or sim on this machine")
        if checkpoint == RANDOM:
            raise BackendUnavailable("sam3: checkpoint 'random' is not supported (860 M params); use sam2")
        if not _has_package("sam3"):
            raise BackendUnavailable(f"sam3 is not installed. GPU extra: {SAM3_GPU_EXTRA}")
        self.checkpoint = _resolve_or_unavailable("sam3", "sam3", checkpoint)
        bpe = Path(bpe_path) if bpe_path else find_bpe_vocab()
        self.device = device

        from sam3.model_builder import build_sam3_video_predictor

        # A checkpoint_path keeps build_sam3_video_model from downloading (its load_from_HF
        # only applies when the path is None; the predictor's __init__ does not accept it).
        gpus = [int(device.split(":")[1])] if ":" in device else None
        try:
            self.predictor = build_sam3_video_predictor(checkpoint_path=str(self.checkpoint), bpe_path=str(bpe),
                                                        gpus_to_use=gpus)
        except Exception as e:
            raise_if_damaged("sam3", self.checkpoint, e)
            raise

    def _pick(self, outputs: dict | None, H: int, W: int) -> np.ndarray:
        if not outputs or len(outputs.get("out_obj_ids", ())) == 0:
            return np.zeros((H, W), bool)
        masks = np.asarray(outputs["out_binary_masks"]).astype(bool)
        masks = masks.reshape(len(outputs["out_obj_ids"]), *masks.shape[-2:])  # tolerate [N,1,H,W]
        probs = np.asarray(outputs["out_probs"], np.float64).reshape(-1)
        if self.select == "best":
            m = masks[int(np.argmax(probs))]
        else:
            m = masks[probs > self.prob_thresh].any(axis=0) if (probs > self.prob_thresh).any() \
                else np.zeros(masks.shape[-2:], bool)
        if m.shape != (H, W):  # SAM 3 answers at video resolution; guard anyway
            m = cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        return m

    def segment(self, frames: np.ndarray, prompt: SegPrompt, *, seg: np.ndarray | None = None) -> np.ndarray:
        """``seg`` is ignored; accepted so one call fits every backend."""
        frames = _check_frames(frames)
        T, H, W = frames.shape[:3]
        f0 = _check_prompt_frame(prompt, T)
        if not prompt.text:
            raise ConfigError("sam3 needs a text prompt (SegPrompt.text, e.g. 'blue ball'; the task's prompt)")
        out = np.zeros((T, H, W), bool)
        p = self.predictor
        with tempfile.TemporaryDirectory(prefix="kubm_sam3_") as d:
            _write_jpegs(frames, d)
            sid = p.handle_request({"type": "start_session", "resource_path": d})["session_id"]
            try:
                r = p.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": f0,
                                      "text": prompt.text})
                out[r["frame_index"]] = self._pick(r["outputs"], H, W)
                # "both": forward from the prompt frame, then backward from the frame before it.
                for r in p.handle_stream_request({"type": "propagate_in_video", "session_id": sid,
                                                  "propagation_direction": "both"}):
                    out[r["frame_index"]] = self._pick(r["outputs"], H, W)
            finally:
                p.handle_request({"type": "close_session", "session_id": sid})
        return out

    def describe(self) -> dict:
        ckpt = self.checkpoint
        return {"backend": "sam3", "model": "sam3", "checkpoint": None if ckpt is None else str(ckpt),
                "checkpoint_sha256": (_sha16(ckpt) if ckpt is not None and ckpt.is_file() else "injected"),
                "image_size": 1008, "device": self.device, "select": self.select,
                "prob_thresh": self.prob_thresh, "selection": self.selection}


# --------------------------------------------------------------------------- selection


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
