"""How far the observed context drifts from the first frame's in unperturbed episodes.

The perturbed protocol observes the context (relocate: the goal marker's image centroid)
after every step and replans when it moves more than `perturbed.context_replan_px` from the
plan's. With a static target the context moves only when the hand hides part of the marker;
this measures that drift on the demos of a task (expert episodes, the same scenes the policy
sees) so the trigger sits above it.

    python benchmarks/context_drift.py adroit/relocate --demos data/adroit/relocate/demos/train.zarr --moves 50 \\
        --out benchmarks/results/context_drift_relocate.json

Prints JSON: per episode the largest deviation (px, max over x and y) from the first frame's
context and the frames where the marker was not found; percentiles over all frames; and the
fraction of episodes in which a trigger of 1, 2, 3, 5, 8 and 10 px would fire. With --moves N
it also applies the configured perturbation on the first N training seeds (right after the reset)
and reports how far the context moves: the trigger must sit below that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task, split_task_id
from kubm.errors import DataError
from kubm.features.context import extract_context
from kubm.storage.episode_store import EpisodeStore

TRIGGERS_PX = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0)


def move_shifts(task, n: int) -> dict:
    """How far the configured perturbation moves the context, on the first n training seeds."""
    from kubm.evaluation.perturbation import perturbation_spec
    from kubm.sim.registry import make_env

    spec = perturbation_spec(task.settings, task.id)
    env = make_env(task.suite, task.task, task.settings, render=True)
    shifts = []
    try:
        for seed in list(task.seeds("train"))[:n]:  # training seeds: the protocol is not tuned on test seeds
            obs = env.reset(seed)
            h, w = obs.rgb.shape[:2]
            c0 = extract_context(task.settings, obs.rgb, obs.seg, w, h)
            env.move_part(spec.move, spec.offset(seed, env.part_position(spec.move)))
            obs = env.step(obs.qpos)
            c1 = extract_context(task.settings, obs.rgb, obs.seg, w, h)
            shifts.append(float(np.max(np.abs(c1 - c0) * [w, h])))
    finally:
        env.close()
    return {"seeds": n, "min": min(shifts), "median": float(np.median(shifts)), "max": max(shifts), "all": shifts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--demos", type=Path, required=True, help="a collect store (demos/train.zarr)")
    ap.add_argument("--moves", type=int, default=0, help="also measure the configured move on this many test seeds")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    config = load_config([DEFAULT_CONFIG])
    task = resolve_task(config, *split_task_id(config, args.task))
    store = EpisodeStore.open(args.demos, producer="collect")
    per_episode, frames_dev, hidden_total = [], [], 0
    for i in range(store.n_episodes):
        ep = store.episode(i, ["rgb", "seg"])
        rgb, seg = ep["rgb"], ep.get("seg")
        h, w = rgb.shape[1:3]
        c0 = extract_context(task.settings, rgb[0], None if seg is None else seg[0], w, h)
        last, devs, hidden = c0, [], 0
        for t in range(1, len(rgb)):
            try:
                last = extract_context(task.settings, rgb[t], None if seg is None else seg[t], w, h)
            except DataError:
                hidden += 1  # the evaluator keeps the last context seen
            devs.append(float(np.max(np.abs(last - c0) * [w, h])))
        hidden_total += hidden
        frames_dev += devs
        per_episode.append({"episode": i, "max_px": max(devs), "hidden_frames": hidden, "frames": len(rgb)})
    maxes = np.array([e["max_px"] for e in per_episode])
    doc = {
        "task": task.id, "demos": str(args.demos), "episodes": len(per_episode),
        "frames_px": {q: float(np.percentile(frames_dev, q)) for q in (50, 95, 99, 100)},
        "episode_max_px": {q: float(np.percentile(maxes, q)) for q in (50, 95, 100)},
        "hidden_frames_fraction": hidden_total / sum(e["frames"] for e in per_episode),
        "episodes_that_would_replan": {str(t): float(np.mean(maxes > t)) for t in TRIGGERS_PX},
        "per_episode": per_episode,
    }
    if args.moves:
        doc["moves_px"] = move_shifts(task, args.moves)
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if not args.out else json.dumps({k: v for k, v in doc.items() if k != "per_episode"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
