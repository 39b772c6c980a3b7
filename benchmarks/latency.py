"""Per-step policy cost of every method, in one process, on the same test features.

    python benchmarks/latency.py --task dexart/bucket
    python benchmarks/latency.py --task adroit/relocate --methods kubm kodex diffusion act

Loads ``models/{suite}/{task}/{method}/seed0`` for each method (fitted by the pipeline) and
drives it through the evaluator's own adapter (``kubm.evaluation.rollout.make_runner``) on the
test feature store's episodes, with recorded observations instead of a simulator, so only
policy time is measured:

- planning methods (kubm, kodex, regression): one full-horizon ``plan`` at t = 0 plus the
  per-step action read, divided by the episode's steps (replans excluded: their number
  depends on the simulator);
- receding-horizon methods (diffusion, act): every ``act`` call, per step.

torch runs on one thread (``--threads``) as in the evaluate rule. Prints one JSON object with
per-method median/p95 ms per step and the ratio of each method to K-UBM; the
K-UBM : Diffusion Policy ratio is reported as ``headline``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import method_names
from kubm.evaluation.rollout import make_runner
from kubm.policies import load_policy
from kubm.policies.features import load_features


def time_episode(policy, ep) -> float:
    """Seconds of policy time per step over one recorded episode."""
    runner = make_runner(policy)
    T = len(ep)
    total = 0.0
    t0 = time.perf_counter()
    runner.start(ep.qpos[0], ep.flow[0], ep.context, T)
    total += time.perf_counter() - t0
    for t in range(T):
        t0 = time.perf_counter()
        runner.act(t, ep.qpos[t], ep.flow[t])
        total += time.perf_counter() - t0
    return total / T


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="suite/task, e.g. dexart/bucket")
    ap.add_argument("--methods", nargs="+", default=list(method_names()))
    ap.add_argument("--models", type=Path, default=Path("models"), help="models root")
    ap.add_argument("--features", type=Path, default=None, help="test feature store (default data/<task>/features/test.zarr)")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="training seed of the models")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    features = load_features(args.features or Path("data") / args.task / "features/test.zarr")
    episodes = features.episodes[: args.episodes]
    missing = [m for m in args.methods if not (args.models / args.task / m / f"seed{args.seed}").is_dir()]
    if missing:
        sys.exit(f"no fitted model for {missing} under {args.models}/{args.task}/<method>/seed{args.seed}; build them with "
                 f"`snakemake models/{args.task}/<method>/seed{args.seed} --cores 2 --configfile config/study.yaml` "
                 "or pass --methods with the ones you have")
    out: dict = {"task": args.task, "episodes": len(episodes), "steps": int(sum(len(e) for e in episodes)),
                 "threads": args.threads, "methods": {}}
    for m in args.methods:
        policy = load_policy(args.models / args.task / m / f"seed{args.seed}")
        time_episode(policy, episodes[0])  # warm-up (allocations, lazy init)
        per_ep = [time_episode(policy, ep) for ep in tqdm(episodes, desc=m, file=sys.stderr)]
        out["methods"][m] = {"median_ms": float(np.median(per_ep) * 1e3), "p95_ms": float(np.percentile(per_ep, 95) * 1e3)}
    ref = out["methods"].get("kubm")
    if ref:
        out["ratio_to_kubm"] = {m: v["median_ms"] / ref["median_ms"] for m, v in out["methods"].items()}
        if "diffusion" in out["methods"]:
            out["headline"] = {"kubm_to_diffusion": ref["median_ms"] / out["methods"]["diffusion"]["median_ms"],
                               "diffusion_over_kubm": out["methods"]["diffusion"]["median_ms"] / ref["median_ms"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
