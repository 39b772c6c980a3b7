"""What skipping the colour image saves per evaluation step (issue: the headline in 20 minutes).

With sim perception the evaluator reads only depth and segmentation after the first frame,
so it turns the env's ``render_rgb`` off (kubm.evaluation.rollout). This times env.step with
the colour image on and off, interleaved in blocks so machine load hits both alike.

    python benchmarks/render_cost.py --out benchmarks/results/render_cost.json

Prints JSON: per task, median ms per step with and without the colour image, and the saving.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.sim.registry import make_env
from _common import emit_json


def time_steps(env, q, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        env.step(q)
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["adroit/relocate", "dexart/bucket"])
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25, help="steps per block")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    config = load_config([DEFAULT_CONFIG])
    doc = {"blocks": args.blocks, "steps_per_block": args.steps, "tasks": {}}
    for tid in args.tasks:
        suite, task = tid.split("/")
        env = make_env(suite, task, resolve_task(config, suite, task).settings, render=True)
        try:
            obs = env.reset(100000)
            q = np.asarray(obs.qpos)
            on, off = [], []
            for _ in range(args.blocks):
                env.render_rgb = True
                on += time_steps(env, q, args.steps)
                env.render_rgb = False
                off += time_steps(env, q, args.steps)
            env.render_rgb = True
        finally:
            env.close()
        a, b = 1e3 * np.median(on), 1e3 * np.median(off)
        doc["tasks"][tid] = {"step_ms_with_rgb": a, "step_ms_without_rgb": b, "saving": 1 - b / a}
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
