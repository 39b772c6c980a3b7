"""DexArt (SAPIEN 3) env speed: control steps per second with and without rendering. Prints JSON.

One control step is 10 PhysX substeps of 4 ms (25 Hz) with gravity compensation; a
rendered step also rasterises RGB + depth + per-actor segmentation from the task
camera (SAPIEN `minimal` shader pack) and converts them to the `Observation` arrays.

Actions: `--policy expert` (default for bucket) runs the scripted bucket expert (reach,
grasp, raise the handle, lift: the contact-rich steps a demo has, plus the expert's own
Jacobian cost); `--policy random` is a smooth random walk of the 22 joint targets around
the initial pose. Also reported: env construction time (the first rendered picture
compiles shaders), reset time, expert success, and the Vulkan device SAPIEN picked.

    python benchmarks/dexart_speed.py [--task bucket] [--size 128] [--steps 250] [--episodes 2]
                                      [--policy expert|random]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from kubm.sim.base import CameraSpec
from kubm.sim.dexart.env import DexArtEnv
from kubm.experts.dexart import EXPERTS


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


def run(task: str, render: bool, size: int, steps: int, episodes: int, policy: str) -> dict:
    t0 = time.perf_counter()
    env = DexArtEnv(task, camera=CameraSpec(width=size, height=size), render=render)
    build_s = time.perf_counter() - t0
    step_s, reset_s, n, successes = 0.0, 0.0, 0, 0
    for ep in range(episodes):
        seed = 1000 + ep
        t0 = time.perf_counter()
        env.reset(seed)
        reset_s += time.perf_counter() - t0
        if policy == "expert":
            expert = EXPERTS[f"dexart_{task}"]()
            expert.reset(env, seed)
            t0 = time.perf_counter()
            for _ in range(steps):
                env.step(expert.act(env))
        else:
            acts = action_stream(env, steps, ep)
            t0 = time.perf_counter()
            for a in acts:
                env.step(a)
        step_s += time.perf_counter() - t0
        successes += env.success()
        n += steps
    res = {
        "render": render,
        "steps_per_s": n / step_s,
        "ms_per_step": 1e3 * step_s / n,
        "reset_ms": 1e3 * reset_s / episodes,
        "build_s": build_s,
        "successes": successes,
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
    ap.add_argument("--policy", choices=["expert", "random"], default=None,
                    help="default: expert where one exists for the task, else random")
    args = ap.parse_args()
    policy = args.policy or ("expert" if f"dexart_{args.task}" in EXPERTS else "random")
    if policy == "expert" and f"dexart_{args.task}" not in EXPERTS:
        ap.error(f"no scripted expert for {args.task} yet; use --policy random")
    out = {
        "task": args.task,
        "size": args.size,
        "steps_per_episode": args.steps,
        "policy": policy,
        "episodes": args.episodes,
        "control_hz": 25.0,
        "substeps": 10,
        "cpu": platform.processor() or platform.machine(),
        "physics_only": run(args.task, False, args.size, args.steps, args.episodes, policy),
        "rendered": run(args.task, True, args.size, args.steps, args.episodes, policy),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
