"""Action smoothness of MPPI demos against a task's scripted expert, on the same seeds.

    python benchmarks/mppi_jerk.py --task adroit/relocate --seeds 100000:100010

Both experts run physics-only for the task's horizon on every seed. Actions are joint
targets normalised to [-1, 1] by the joint limits. Jerk (as in kubm.evaluation.metrics.mean_squared_jerk) is the mean over
steps and action dimensions of the squared third difference of the normalised action
per control step (`kubm.evaluation.metrics.mean_squared_jerk` with fps = 1); the same
metric in physical units (fps = the env's control rate, 1/s³) is reported too.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from kubm.config import load_config, resolve_task
from kubm.evaluation.metrics import mean_squared_jerk
from kubm.experts.registry import make_expert
from kubm.sim.registry import make_env


def parse_seeds(text: str) -> list[int]:
    if ":" in text:
        lo, hi = map(int, text.split(":"))
        return list(range(lo, hi))
    return [int(s) for s in text.split(",")]


def run(env, expert, seeds, horizon):
    lim = env.joint_limits()
    mid, half = lim.mean(axis=1), np.maximum(np.ptp(lim, axis=1) / 2, 1e-9)
    per_step, per_s, wins, t0 = [], [], 0, time.perf_counter()
    for seed in seeds:
        env.reset(seed)
        expert.reset(env, seed)
        acts = []
        for _ in range(horizon):
            acts.append(expert.act(env))
            env.step(acts[-1])
        wins += bool(env.success())
        a = (np.clip(np.array(acts), lim[:, 0], lim[:, 1]) - mid) / half
        per_step.append(mean_squared_jerk(a, 1.0))
        per_s.append(mean_squared_jerk(a, env.fps))
        print(f"  {expert.name} seed {seed}: jerk {per_step[-1]:.4f} success {env.success()}", file=sys.stderr)
    return {
        "jerk_per_step": float(np.mean(per_step)),
        "jerk_per_step_median": float(np.median(per_step)),
        "jerk_per_s3": float(np.mean(per_s)),
        "success_rate": wins / len(seeds),
        "seconds_per_episode": (time.perf_counter() - t0) / len(seeds),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="adroit/relocate", help="suite/task")
    ap.add_argument("--seeds", default="100000:100010")
    ap.add_argument("--params", default=None, help="MPPI params as JSON (default: its DEFAULTS)")
    args = ap.parse_args(argv)
    suite, _, name = args.task.rpartition("/")
    suite = suite or "adroit"
    task = resolve_task(load_config(), suite, name)
    seeds, horizon = parse_seeds(args.seeds), task.settings["horizon"]
    env = make_env(suite, name, task.settings, render=False)
    scripted_cfg = task.settings["expert"]
    mppi_params = json.loads(args.params or "{}")
    result = {"task": task.id, "seeds": args.seeds, "n": len(seeds), "horizon": horizon,
              "mppi_params": mppi_params}
    result["mppi"] = run(env, make_expert("mppi", mppi_params), seeds, horizon)
    if scripted_cfg["name"] != "mppi":
        result["scripted"] = {"expert": scripted_cfg["name"],
                              **run(env, make_expert(scripted_cfg["name"], scripted_cfg.get("params")), seeds, horizon)}
        result["jerk_ratio_mppi_over_scripted"] = result["mppi"]["jerk_per_step"] / result["scripted"]["jerk_per_step"]
    env.close()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
