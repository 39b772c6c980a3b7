"""Perception throughput and OpenCV-LK accuracy against the simulator's ground truth.

Rolls each Adroit task with rendering (its expert where one exists, else smooth random
joint targets around the start pose), then times every backend on the same frames and
scores LK tracks against sim tracks. Prints one JSON object.

    python benchmarks/perception.py                       # sim + LK on all Adroit tasks
    python benchmarks/perception.py --learned             # + SAM 2 / CoTracker3 (random weights) throughput
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from kubm.experts.registry import make_expert
from kubm.perception.queries import ordered_queries
from kubm.perception.segmentation import SegPrompt, SimSegmenter, make_segmenter
from kubm.perception.tracking import FrameAux, OpenCVLKTracker, SimPointTracker, make_tracker, tracking_metrics
from kubm.sim.base import CameraSpec
from kubm.sim.registry import make_env

EXPERTS = {"relocate": "adroit_relocate", "door": "adroit_door"}


def rollout(task: str, steps: int, seed: int):
    env = make_env("adroit", task, {"camera_spec": CameraSpec()}, render=True)
    obs = env.reset(seed)
    expert = make_expert(EXPERTS[task]) if task in EXPERTS else None
    if expert:
        expert.reset(env, seed)
    rng = np.random.default_rng(seed)
    lo, hi = env.joint_limits().T
    target, frames = obs.qpos.copy(), []
    for _ in range(steps):
        frames.append((obs.rgb, obs.depth, obs.seg, env.object_poses()))
        if expert:
            action = expert.act(env)
        else:  # a slow random walk of joint targets: the hand moves and touches the object
            target = np.clip(target + rng.normal(0, 0.02, size=target.shape) * (hi - lo), lo, hi)
            action = target
        obs = env.step(action)
    rgb, depth, seg, pose = (np.stack(x) for x in zip(*frames))
    aux = FrameAux(depth=depth, seg=seg, object_pose=pose, object_ids=np.asarray(env.object_seg_ids),
                   K=env.camera_intrinsics(), world_to_cam=env.camera_extrinsics())
    env.close()
    return rgb, seg, aux, env.object_seg_ids


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", nargs="+", default=["relocate", "door", "hammer", "pen"])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--points", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--learned", action="store_true", help="also time SAM 2 and CoTracker3 with random weights")
    ap.add_argument("--learned-frames", type=int, default=16)
    args = ap.parse_args()

    out = {"machine_cores": os.cpu_count(), "steps": args.steps, "points": args.points, "tasks": {}, "throughput_fps": {}}
    fps: dict[str, list[float]] = {}
    for task in args.tasks:
        rgb, seg, aux, ids = rollout(task, args.steps, args.seed)
        masks, t_seg = timed(SimSegmenter(ids).segment, rgb, SegPrompt(), seg=seg)
        queries = ordered_queries(masks[0], n=args.points, seed=args.seed)
        gt, t_sim = timed(SimPointTracker().track, rgb, queries, aux=aux)
        lk, t_lk = timed(OpenCVLKTracker().track, rgb, queries, aux=aux)
        m = tracking_metrics(lk, gt)
        motion = float(np.median(np.linalg.norm(gt.xy[-1] - gt.xy[0], axis=-1)))
        out["tasks"][task] = {"opencv_lk_vs_sim": {k: m[k] for k in ("median_px", "within_2px", "visibility_agreement")},
                              "object_motion_px_median": motion, "mask_pixels_frame0": int(masks[0].sum()),
                              "policy": EXPERTS.get(task, "random-walk joint targets")}
        for name, t in (("segment_sim", t_seg), ("track_sim", t_sim), ("track_opencv_lk", t_lk)):
            fps.setdefault(name, []).append(len(rgb) / t)
        print(f"{task}: LK median {m['median_px']:.2f} px vs sim, object moved {motion:.1f} px", file=sys.stderr)

    if args.learned:
        n = args.learned_frames
        rgb, seg, aux, ids = rollout(args.tasks[0], n, args.seed)
        box_mask = SimSegmenter(ids).segment(rgb[:1], SegPrompt(), seg=seg[:1])[0]
        ys, xs = np.nonzero(box_mask)
        prompt = SegPrompt(box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        sam2 = make_segmenter("sam2", {"sam2": {"checkpoint": "random", "image_size": 256}})
        _, t = timed(sam2.segment, rgb, prompt)
        fps["segment_sam2_tiny_256_random"] = [n / t]
        queries = ordered_queries(box_mask, n=args.points, seed=args.seed)
        for res in ((128, 128), (384, 512)):
            ct = make_tracker("cotracker3", {"cotracker3": {"checkpoint": "random", "model_resolution": list(res)}})
            _, t = timed(ct.track, rgb, queries)
            fps[f"track_cotracker3_offline_{res[0]}x{res[1]}_random"] = [n / t]

    out["throughput_fps"] = {k: round(float(np.median(v)), 2) for k, v in fps.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
