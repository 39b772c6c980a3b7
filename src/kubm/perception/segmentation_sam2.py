"""The ``sam2`` backend: SAM 2.1's video predictor, prompted with a box, points or a mask."""

from __future__ import annotations

import logging
import tempfile
import warnings

import numpy as np

from kubm.errors import ConfigError
from kubm.perception.errors import BackendUnavailable
from kubm.perception.weights import raise_if_damaged
from kubm.perception import segmentation_types as common

log = logging.getLogger(__name__)

# SAM 2.1 configs inside the sam2 package, by model size.
SAM2_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


class Sam2Segmenter:
    """SAM 2.1 video predictor, prompted with a mask, or a box and/or points, on one frame."""

    name = "sam2"
    selection: dict | None = None

    def __init__(self, model: str = "tiny", image_size: int = 256, checkpoint: str | None = None,
                 device: str = "cpu"):
        if model not in SAM2_CONFIGS:
            raise ConfigError(f"unknown sam2 model {model!r}; one of {sorted(SAM2_CONFIGS)}")
        if not common._has_package("sam2"):
            raise BackendUnavailable(
                "sam2 is not installed: SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation "
                "sam2==1.1.0 hydra-core iopath (see scripts/setup.sh), or use segment.backend: sim")
        device = common._resolve_device(device)
        if device.startswith("cuda") and not common._cuda_available():
            raise BackendUnavailable(f"sam2: device {device!r} asked for but torch.cuda.is_available() is "
                                     "False; set segment.device: cpu (or auto)")
        self.model, self.image_size, self.device = model, int(image_size), device
        self.config_file = SAM2_CONFIGS[model]
        if checkpoint == common.RANDOM:
            self.checkpoint = None
            log.warning("!" * 72 + "\n!! sam2 with RANDOM weights (checkpoint: random): masks are meaningless."
                        " For tests only.\n" + "!" * 72)
        else:
            self.checkpoint = common._resolve_or_unavailable("sam2", f"sam2.1_hiera_{model}", checkpoint)

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

    def segment(self, frames: np.ndarray, prompt: common.SegPrompt, *, seg: np.ndarray | None = None) -> np.ndarray:
        """``seg`` is ignored; accepted so one call fits every backend."""
        import torch

        frames = common._check_frames(frames)
        T, H, W = frames.shape[:3]
        f0 = common._check_prompt_frame(prompt, T)
        if prompt.mask is None and prompt.box is None and prompt.points is None:
            raise ConfigError("sam2 needs a mask, box or points prompt (text prompts are sam3 only)")
        out = np.zeros((T, H, W), bool)
        with tempfile.TemporaryDirectory(prefix="kubm_sam2_") as d, torch.inference_mode(), \
                warnings.catch_warnings():
            # sam2 built without its CUDA extension warns on every frame; it only skips hole filling.
            warnings.filterwarnings("ignore", message="cannot import name '_C'")
            common._write_jpegs(frames, d)
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
                "checkpoint": common.RANDOM if ckpt is None else str(ckpt),
                "checkpoint_sha256": common.RANDOM if ckpt is None else common._sha16(ckpt),
                "image_size": self.image_size, "device": self.device, "selection": self.selection}
