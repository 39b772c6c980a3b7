"""Final-step success rate of a task's privileged-state expert (physics only, no rendering).

    python benchmarks/expert_success.py --task adroit/relocate --seeds 100000:100100
    python benchmarks/expert_success.py --task dexart/faucet --seeds 100000:100100

``--task`` is ``suite/task`` (a bare Adroit task name is accepted); the expert and its params
come from the task's config entry unless ``--expert`` / ``--params`` override them.
Prints one JSON object: task, expert, n, success_rate, successes, seconds_per_episode, seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from kubm.config import load_config, resolve_task
from kubm.experts.registry import make_expert
from kubm.sim.registry import make_env


def parse_seeds(text: str) -> list[int]:
    """'1000:1100' (half-open range) or '1,2,5'."""
    if ":" in text:
        lo, hi = map(int, text.split(":"))
        return list(range(lo, hi))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="suite/task, e.g. adroit/relocate or dexart/bucket")
    ap.add_argument("--config", "-c", action="append", default=None, help="config file(s) (default config/config.yaml)")
    ap.add_argument("--expert", default=None, help="expert name (default: the task's config entry)")
    ap.add_argument("--seeds", default="100000:100100", help="held-out seeds, 'lo:hi' or a comma list")
    ap.add_argument("--params", default=None, help="expert parameter overrides as JSON")
    args = ap.parse_args(argv)

    suite, _, name = args.task.rpartition("/")
    suite = suite or "adroit"
    config = load_config(args.config) if args.config else load_config()
    task = resolve_task(config, suite, name)
    expert_cfg = dict(task.settings["expert"])
    if args.expert:
        expert_cfg = {"name": args.expert}
    params = {**(expert_cfg.get("params") or {}), **json.loads(args.params or "{}")}
    seeds = parse_seeds(args.seeds)
    env = make_env(suite, name, task.settings, render=False)
    expert = make_expert(expert_cfg["name"], params)
    horizon = task.settings["horizon"]
    wins, t0 = 0, time.perf_counter()
    bar = tqdm(seeds, desc=f"{task.id} {expert_cfg['name']}", file=sys.stderr)
    for seed in bar:
        env.reset(seed)
        expert.reset(env, seed)
        for _ in range(horizon):
            env.step(expert.act(env))
        wins += bool(env.success())  # final-step success
        bar.set_postfix(success=wins)
    env.close()
    result = {
        "task": task.id,
        "expert": expert_cfg["name"],
        "params": params,
        "n": len(seeds),
        "successes": wins,
        "success_rate": wins / len(seeds),
        "seconds_per_episode": (time.perf_counter() - t0) / len(seeds),
        "horizon": horizon,
        "seeds": args.seeds,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
