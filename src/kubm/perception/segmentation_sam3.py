"""The ``sam3`` backend: SAM 3's video predictor, prompted with text; CUDA only."""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kubm.errors import ConfigError
from kubm.perception.errors import BackendUnavailable
from kubm.perception.weights import raise_if_damaged
from kubm.perception import segmentation_types as common

log = logging.getLogger(__name__)

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
SAM3_GPU_EXTRA = (
    'pip install sam3==0.1.4 "numpy<2.4" timm ftfy regex pycocotools einops triton '
    "(with a CUDA torch and its matching torchvision), then "
    "pip install --no-deps open_clip_torch for the BPE vocabulary"
)


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
            self.checkpoint = None if checkpoint in (None, common.RANDOM) else Path(checkpoint)
            return
        device = common._resolve_device(device)
        if not device.startswith("cuda") or not common._cuda_available():
            raise BackendUnavailable(
                f"sam3 needs a CUDA GPU: torch.cuda.is_available() is {common._cuda_available()} and device is "
                f"{device!r} (SAM 3 hard-codes CUDA calls); use segment.backend: sam2 or sim on this machine")
        if checkpoint == common.RANDOM:
            raise BackendUnavailable("sam3: checkpoint 'random' is not supported (860 M params); use sam2")
        if not common._has_package("sam3"):
            raise BackendUnavailable(f"sam3 is not installed. GPU extra: {SAM3_GPU_EXTRA}")
        self.checkpoint = common._resolve_or_unavailable("sam3", "sam3", checkpoint)
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

    def segment(self, frames: np.ndarray, prompt: common.SegPrompt, *, seg: np.ndarray | None = None) -> np.ndarray:
        """``seg`` is ignored; accepted so one call fits every backend."""
        frames = common._check_frames(frames)
        T, H, W = frames.shape[:3]
        f0 = common._check_prompt_frame(prompt, T)
        if not prompt.text:
            raise ConfigError("sam3 needs a text prompt (SegPrompt.text, e.g. 'blue ball'; the task's prompt)")
        out = np.zeros((T, H, W), bool)
        p = self.predictor
        with tempfile.TemporaryDirectory(prefix="kubm_sam3_") as d:
            common._write_jpegs(frames, d)
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
                "checkpoint_sha256": (common._sha16(ckpt) if ckpt is not None and ckpt.is_file() else "injected"),
                "image_size": 1008, "device": self.device, "select": self.select,
                "prob_thresh": self.prob_thresh, "selection": self.selection}
