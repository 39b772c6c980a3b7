"""DexArt (SAPIEN 3) env speed: control steps per second with and without rendering. Prints JSON.

One control step is 10 PhysX substeps of 4 ms (25 Hz) with gravity compensation; a
rendered step also rasterises RGB + depth + per-actor segmentation from the task
camera (SAPIEN `minimal` shader pack) and converts them to the `Observation` arrays.

The action stream is a smooth random walk of the 22 joint targets around the initial
pose (the hand sweeps above and into the object, so there are contacts), identical for
both modes. Also reported: env construction time (the first rendered picture compiles
shaders), reset time, and the Vulkan device SAPIEN picked.

    python benchmarks/dexart_speed.py [--task bucket] [--size 128] [--steps 250] [--episodes 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from kubm.sim.base import CameraSpec
from kubm.sim.dexart.env import DexArtEnv


def action_stream(env: DexArtEnv, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lim = env.joint_limits()
    q = env.initial_qpos()
    out = np.empty((steps, env.action_dim))
    drift = np.zeros(env.action_dim)
    for t in range(steps):
        drift = 0.9 * drift + rng.normal(0, 0.02, env.action_dim)
        q = np.clip(q + drift, lim[:, 0], lim[:, 1])
        q[:6] = np.clip(q[:6], env.initial_qpos()[:6] - 0.6, env.initial_qpos()[:6] + 0.6)
        out[t] = q
    return out


def run(task: str, render: bool, size: int, steps: int, episodes: int) -> dict:
    t0 = time.perf_counter()
    env = DexArtEnv(task, camera=CameraSpec(width=size, height=size), render=render)
    build_s = time.perf_counter() - t0
    step_s, reset_s, n = 0.0, 0.0, 0
    for ep in range(episodes):
        t0 = time.perf_counter()
        env.reset(1000 + ep)
        reset_s += time.perf_counter() - t0
        acts = action_stream(env, steps, ep)
        t0 = time.perf_counter()
        for a in acts:
            env.step(a)
        step_s += time.perf_counter() - t0
        n += steps
    res = {
        "render": render,
        "steps_per_s": n / step_s,
        "ms_per_step": 1e3 * step_s / n,
        "reset_ms": 1e3 * reset_s / episodes,
        "build_s": build_s,
    }
    if render:
        res["device"] = env.scene.render_system.device.name
    env.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="bucket")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--episodes", type=int, default=2)
    args = ap.parse_args()
    out = {
        "task": args.task,
        "size": args.size,
        "steps_per_episode": args.steps,
        "episodes": args.episodes,
        "control_hz": 25.0,
        "substeps": 10,
        "cpu": platform.processor() or platform.machine(),
        "physics_only": run(args.task, False, args.size, args.steps, args.episodes),
        "rendered": run(args.task, True, args.size, args.steps, args.episodes),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
