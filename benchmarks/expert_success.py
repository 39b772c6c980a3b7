"""Final-step success rate of a scripted Adroit expert (physics only, no rendering).

    python benchmarks/expert_success.py --task relocate --seeds 1000:1100

Prints one JSON object: task, expert, n, success_rate, seconds_per_episode, seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

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
    ap.add_argument("--task", required=True, help="adroit task: relocate or door")
    ap.add_argument("--expert", default=None, help="expert name (default adroit_<task>)")
    ap.add_argument("--seeds", default="1000:1100", help="held-out seeds, 'lo:hi' or a comma list")
    ap.add_argument("--params", default="{}", help="expert parameter overrides as JSON")
    args = ap.parse_args(argv)

    expert_name = args.expert or f"adroit_{args.task}"
    seeds = parse_seeds(args.seeds)
    env = make_env("adroit", args.task, {}, render=False)
    expert = make_expert(expert_name, json.loads(args.params))
    wins, t0 = 0, time.perf_counter()
    for seed in tqdm(seeds, desc=f"{expert_name}", file=sys.stderr):
        env.reset(seed)
        expert.reset(env, seed)
        for _ in range(env.horizon):
            env.step(expert.act(env))
        wins += env.success()  # final-step success
    env.close()
    result = {
        "task": args.task,
        "expert": expert_name,
        "n": len(seeds),
        "success_rate": wins / len(seeds),
        "seconds_per_episode": (time.perf_counter() - t0) / len(seeds),
        "seeds": args.seeds,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
