"""What decimating the DexArt robot's visual meshes buys and costs (issue: the headline in 20 minutes).

A DexArt evaluation step is SAPIEN rasterising on lavapipe, and its cost is triangles: hiding
the robot's large meshes cuts a 128 x 128 depth + segmentation render by more than half.
For each cap on triangles per visual mesh (`visual_max_triangles`), this replays one seeded
random walk of joint targets from the bucket reset and reports:
- the median render time per step (the list of caps is run twice, in opposite orders, so
  machine load drifts over both alike);
- the robot's visual triangles;
- agreement with the original meshes: the fraction of pixels whose segmentation id differs
  and whose depth differs by more than 1 mm;
- for the original meshes, each link's triangles and pixels at the walk's last step, and the
  render time with the robot hidden (what its triangles cost).

    python benchmarks/render_lod.py --out benchmarks/results/render_lod.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import sapien

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.sim.registry import make_env
from _common import emit_json


def link_triangles(link) -> int:
    body = link.entity.find_component_by_type(sapien.render.RenderBodyComponent)
    return sum(len(p.triangles) for sh in (body.render_shapes if body is not None else [])
               if isinstance(sh, sapien.render.RenderShapeTriangleMesh) for p in sh.parts)


def robot_meshes(env) -> dict:
    """Per robot link: visual triangles and pixels covered in the current picture."""
    ids = np.asarray(env._cam.get_picture("PositionSegmentation"))[..., 3]
    out = {}
    for link in env.robot.get_links():
        out[link.name] = {"triangles": link_triangles(link), "pixels": int((ids == link.entity.per_scene_id).sum())}
    return out


def hidden_robot_ms(env, n: int = 20) -> float:
    """Median render time with every robot visual hidden: what the robot's triangles cost."""
    for link in env.robot.get_links():
        body = link.entity.find_component_by_type(sapien.render.RenderBodyComponent)
        if body is not None:
            body.visibility = 0.0
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        env.render()
        ms.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(ms))


def walk(settings: dict, cap, steps: int, seed: int):
    env = make_env("dexart", "bucket", {**settings, "visual_max_triangles": cap}, render=True)
    try:
        obs = env.reset(100000)
        env.render_rgb = False
        rng = np.random.default_rng(seed)
        q = np.asarray(obs.qpos, np.float32)
        ms, depth, seg = [], [], []
        for _ in range(steps):
            q = q + rng.normal(0, 0.03, q.shape).astype(np.float32)
            env._set_targets(q)  # physics without the render that env.step does
            for _ in range(env.frame_skip):
                env.robot.set_qf(env.robot.compute_passive_force(True, False))
                env.scene.step()
            t0 = time.perf_counter()
            _, d, s = env.render()
            ms.append(1e3 * (time.perf_counter() - t0))
            depth.append(d)
            seg.append(s)
        extra = {"meshes": robot_meshes(env), "hidden_robot_ms": hidden_robot_ms(env)} if cap is None else {}
        return ms, np.stack(depth), np.stack(seg), sum(link_triangles(link) for link in env.robot.get_links()), extra
    finally:
        env.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caps", nargs="+", default=["none", "4000", "2000", "1000", "500"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    caps = [None if c == "none" else int(c) for c in args.caps]
    settings = dict(resolve_task(load_config([DEFAULT_CONFIG]), "dexart", "bucket").settings)
    times: dict = {c: [] for c in caps}
    images, tris, hidden, meshes = {}, {}, [], {}
    for order in (caps, caps[::-1]):
        for cap in order:
            ms, depth, seg, n, more = walk(settings, cap, args.steps, args.seed)
            times[cap] += ms
            images[cap], tris[cap] = (depth, seg), n
            if more:  # the original meshes: what the robot costs, link by link
                hidden.append(more["hidden_robot_ms"])
                meshes = more["meshes"]
    if None not in images:
        raise SystemExit("--caps must include none (the reference)")
    ref_depth, ref_seg = images[None]
    rows = []
    for cap in caps:
        depth, seg = images[cap]
        rows.append({"visual_max_triangles": cap, "robot_triangles": tris[cap],
                     "render_ms_median": round(float(np.median(times[cap])), 2),
                     "seg_pixels_differing": float((seg != ref_seg).mean()),
                     "depth_pixels_off_1mm": float((np.abs(depth - ref_depth) > 1e-3).mean())})
    largest = max(meshes.items(), key=lambda kv: kv[1]["triangles"])
    doc = {"task": "dexart/bucket", "steps": args.steps, "seed": args.seed,
           "camera": settings["camera"], "caps": rows,
           "original_meshes": {"render_ms_robot_hidden": round(float(np.median(hidden)), 2),
                               "largest_link": {"link": largest[0], **largest[1]},
                               "per_link_at_last_step": meshes}}
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
