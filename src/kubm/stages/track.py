"""track: N points on the manipulated object, tracked through every demo episode.

Queries lie on a quantile grid of the eroded first-frame mask of the segment stage
(``kubm.perception.queries.ordered_queries``), so point k is the same part of the
object in every episode. Quality is scored against the simulator's ground
truth tracks (object points moved with the object's pose, depth-tested).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig, lineage_hash
from kubm.perception.queries import ordered_queries
from kubm.perception.tracking import FrameAux, SimPointTracker, make_tracker, tracking_metrics
from kubm.provenance import package_versions
from kubm.stages.lineage import check_lineage
from kubm.report.video import overlay, write_mp4
from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter, StoreError

log = logging.getLogger(__name__)

PRODUCER = "track"


def episode_aux(demos: EpisodeStore, ep: dict) -> FrameAux:
    cam = demos.attrs["camera"]
    return FrameAux(
        depth=ep["depth"], seg=ep["seg"], object_pose=ep["object_pose"],
        object_ids=np.asarray(demos.attrs["seg_object_ids"]),
        K=np.asarray(cam["intrinsics"], dtype=np.float64),
        world_to_cam=np.asarray(cam["extrinsics_world_to_cam"], dtype=np.float64),
    )


def track(task: TaskConfig, config: dict, demos_path: Path, masks_path: Path, out: Path, metrics_path: Path,
          video_path: Path, *, progress: bool = True) -> dict:
    cfg = config["track"]
    demos = EpisodeStore.open(demos_path, producer="collect", required=["rgb", "depth", "seg", "object_pose"])
    masks = EpisodeStore.open(masks_path, producer="segment", required=["mask"])
    check_lineage(demos_path, demos.attrs.get("lineage"), config, task, "collect")
    check_lineage(masks_path, masks.attrs.get("lineage"), config, task, "segment")
    if masks.n_episodes != demos.n_episodes or not np.array_equal(masks.meta("seed"), demos.meta("seed")):
        raise StoreError(f"{masks_path} does not match {demos_path} (different episodes); rerun segment on these demos")
    tracker = make_tracker(cfg["backend"], {**cfg, "weights": config.get("weights", {})})
    reference = SimPointTracker(**cfg["sim"])
    print(f"track {task.id}: backend {tracker.describe()['backend']}", flush=True)

    n = cfg["n_points"]
    attrs = {
        "suite": task.suite, "task": task.task, "config_hash": task.hash(), "config": cfg,
        "lineage": lineage_hash(config, task, "track"),
        "backend": tracker.describe(), "n_points": n, "camera": demos.attrs["camera"],
        "coordinates": "pixel xy, x = column, y = row, pixel centres at integers",
        "source": {"demos": str(demos_path), "masks": str(masks_path)}, "versions": package_versions(),
    }
    seeds = demos.meta("seed")
    per_episode, qc_frames = [], []
    with EpisodeWriter(out, producer=PRODUCER, data=[ArraySpec("points", (n, 2), "float32"), ArraySpec("visible", (n,), "bool")],
                       meta={"seed": "int64"}, attrs=attrs, overwrite=True) as writer:
        for i in tqdm(range(demos.n_episodes), desc=f"track {task.id}", unit="ep", disable=not progress):
            ep = demos.episode(i, keys=["rgb", "depth", "seg", "object_pose"])
            mask = masks.episode(i)["mask"]
            queries = ordered_queries(mask[0], n=n, seed=int(seeds[i]), erode_px=cfg["erode_px"])
            aux = episode_aux(demos, ep)
            pred = tracker.track(ep["rgb"], queries, aux=aux)
            gt = pred if tracker.describe()["backend"] == "sim" else reference.track(ep["rgb"], queries, aux=aux)
            per_episode.append(tracking_metrics(pred, gt))
            writer.append_episode({"points": pred.xy.astype(np.float32), "visible": pred.visible.astype(bool)},
                                  {"seed": int(seeds[i])})
            if i < cfg["qc_episodes"]:
                qc_frames += [overlay(ep["rgb"][t], mask[t], pred.xy[t], pred.visible[t]) for t in range(len(mask))]
        keys = ("median_px", "within_2px", "visibility_agreement")
        metrics = {
            "backend": tracker.describe()["backend"], "episodes": demos.n_episodes, "n_points": n,
            **{k: float(np.mean([m[k] for m in per_episode])) for k in keys},
            "per_episode": per_episode,
            "ground_truth": "sim tracker (object points moved with the body poses, depth-buffer visibility)",
        }
        writer.attrs["metrics"] = {k: metrics[k] for k in ("backend", *keys)}
        writer.finish()
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    write_mp4(video_path, qc_frames or [overlay(np.zeros((8, 8, 3), np.uint8))], fps=demos.attrs["fps"] / 4)
    return metrics
