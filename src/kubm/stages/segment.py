"""segment: masks of the manipulated object for every demo frame.

The prompt for SAM 2 (a box and a few points) is derived from the first frame's
simulator mask; SAM 3 gets the task's text prompt. The simulator mask is also
the ground truth every backend is scored against (mask IoU in metrics.json).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig, lineage_hash
from kubm.perception.prompts import first_frame_prompt, ground_truth_masks
from kubm.perception.segmentation import make_segmenter, mask_iou
from kubm.provenance import package_versions
from kubm.stages.lineage import check_lineage
from kubm.report.video import overlay, write_mp4
from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter

log = logging.getLogger(__name__)

PRODUCER = "segment"


def segment(task: TaskConfig, config: dict, demos_path: Path, out: Path, metrics_path: Path,
            video_path: Path, *, progress: bool = True) -> dict:
    cfg = config["segment"]
    demos = EpisodeStore.open(demos_path, producer="collect", required=["rgb", "seg"])
    check_lineage(demos_path, demos.attrs.get("lineage"), config, task, "collect")
    object_ids = demos.attrs["seg_object_ids"]
    segmenter = make_segmenter(cfg["backend"], {**cfg, "weights": config.get("weights", {}), "object_ids": object_ids})
    print(f"segment {task.id}: backend {segmenter.name}", flush=True)

    h, w = demos.attrs["camera"]["height"], demos.attrs["camera"]["width"]
    attrs = {
        "suite": task.suite, "task": task.task, "config_hash": task.hash(), "config": cfg,
        "lineage": lineage_hash(config, task, "segment"),
        "backend": segmenter.describe(), "source": {"demos": str(demos_path), "demos_config_hash": demos.attrs["config_hash"]},
        "prompt": task.settings["prompt"], "versions": package_versions(),
    }
    seeds = demos.meta("seed")
    ious, qc_frames = [], []
    with EpisodeWriter(out, producer=PRODUCER, data=[ArraySpec("mask", (h, w), "bool", big=True)],
                       meta={"seed": "int64"}, attrs=attrs, overwrite=True) as writer:
        for i in tqdm(range(demos.n_episodes), desc=f"segment {task.id}", unit="ep", disable=not progress):
            ep = demos.episode(i, keys=["rgb", "seg"])
            gt = ground_truth_masks(ep["seg"], object_ids)
            prompt = first_frame_prompt(gt[0], task.settings["prompt"], int(seeds[i]))
            masks = segmenter.segment(ep["rgb"], prompt, seg=ep["seg"]).astype(bool)
            ious.append(mask_iou(masks, gt))
            writer.append_episode({"mask": masks}, {"seed": int(seeds[i])})
            if i < cfg["qc_episodes"]:
                qc_frames += [overlay(ep["rgb"][t], masks[t]) for t in range(len(masks))]
        iou = np.concatenate(ious)
        metrics = {
            "backend": segmenter.name, "episodes": demos.n_episodes, "frames": int(iou.size),
            "mask_iou_mean": float(iou.mean()), "mask_iou_median": float(np.median(iou)),
            "mask_iou_p10": float(np.percentile(iou, 10)),
            "per_episode_iou": [float(x.mean()) for x in ious],
            "ground_truth": "simulator segmentation of attrs.seg_object_ids",
        }
        writer.attrs["metrics"] = {k: v for k, v in metrics.items() if k != "per_episode_iou"}
        writer.finish()
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    write_mp4(video_path, qc_frames or [overlay(np.zeros((h, w, 3), np.uint8))], fps=demos.attrs["fps"] / 4)
    return metrics
