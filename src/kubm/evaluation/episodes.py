"""The evaluation's episodes: every model rolled out on the protocol's test seeds in one
simulator, with online perception, replanning and (for the replanning methods) the same
episodes executed open loop.

Closed-form methods (KODex, regression) fit identical weights for every training seed;
simulator and policy are deterministic, so such a model's episodes are those of its twin:
they are rolled out once and reused (recorded as "identical_to" per seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig
from kubm.evaluation.models import LoadedModel, weights_digest
from kubm.evaluation.rollout import EpisodeResult, OnlinePerception, make_runner, run_episode

__all__ = ["Episodes", "build_perception", "run_models"]


def build_perception(task: TaskConfig, config: dict, env, n_points: int) -> OnlinePerception:
    from kubm.perception.segmentation import make_segmenter
    from kubm.perception.tracking import make_tracker

    ecfg = config["evaluate"]
    weights = config.get("weights", {})
    segmenter = make_segmenter(ecfg["segment_backend"], {**config.get("segment", {}), "weights": weights,
                                                         "object_ids": list(env.object_seg_ids)})
    tcfg = dict(config.get("track", {}))
    tcfg["cotracker3"] = {**(tcfg.get("cotracker3") or {}), "mode": "online"}  # the evaluator tracks online
    tracker = make_tracker(ecfg["track_backend"], {**tcfg, "weights": weights})
    return OnlinePerception(segmenter, tracker, n_points=n_points, erode_px=tcfg.get("erode_px", 2),
                            prompt_text=task.settings.get("prompt"))


@dataclass
class Episodes:
    results: dict[str, list[tuple[int, EpisodeResult]]] = field(default_factory=dict)
    open_loop: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)  # replanning's ablation
    shared: dict[str, dict[int, int]] = field(default_factory=dict)  # method → {seed: twin seed}
    videos: list[str] = field(default_factory=list)


def run_models(env, loaded: list[LoadedModel], ae, perception: OnlinePerception, seeds: list[int], ecfg: dict, *,
               horizon: int, context_fn, root: Path, art: Path, progress: bool, desc: str) -> Episodes:
    from kubm.report.video import write_mp4

    out = Episodes()
    ablate = bool(ecfg.get("open_loop_ablation", False))
    video_seed = {x.method: min(y.seed for y in loaded if y.method == x.method) for x in loaded}
    for method in {x.method for x in loaded}:  # videos of an earlier run would linger unlisted
        for old in (root / art / "videos").glob(f"{method}_seed*_ep*.mp4"):
            old.unlink()
    first_by_digest: dict[tuple[str, str], int] = {}
    bar = tqdm(total=len(loaded) * len(seeds), desc=desc, unit="ep", disable=not progress)
    try:
        for x in loaded:
            method, train_seed, policy = x.method, x.seed, x.policy
            digest = weights_digest(x.path)
            twin = first_by_digest.get((method, digest)) if digest else None
            if twin is not None:
                out.shared.setdefault(method, {})[train_seed] = twin
                out.results[method] += [(train_seed, ep) for s0, ep in out.results[method] if s0 == twin]
                if method in out.open_loop:
                    out.open_loop[method] += [(train_seed, ok) for s0, ok in out.open_loop[method] if s0 == twin]
                bar.update(len(seeds))
                continue
            if digest:
                first_by_digest[(method, digest)] = train_seed
            ablate_policy = ablate and ecfg["replan"] and make_runner(policy).can_replan
            for j, seed in enumerate(seeds):
                record = train_seed == video_seed[method] and j < ecfg["videos"]
                ep = run_episode(env, policy, ae, perception, seed, context_fn=context_fn, horizon=horizon,
                                 replan=ecfg["replan"], min_replan_interval=ecfg["min_replan_interval"],
                                 record_video=record)
                if record:
                    rel = art / "videos" / f"{method}_seed{train_seed}_ep{seed}.mp4"
                    write_mp4(root / rel, ep.frames, fps=max(1.0, env.fps / 4))
                    out.videos.append(rel.as_posix())
                ep.frames = None
                out.results.setdefault(method, []).append((train_seed, ep))
                if ablate_policy:
                    # the same episode executed open loop; with no replan it is the same episode
                    # (simulator, perception and policy are deterministic), so it is reused
                    ol = ep if ep.replans == 0 else run_episode(
                        env, policy, ae, perception, seed, context_fn=context_fn, horizon=horizon, replan=False)
                    out.open_loop.setdefault(method, []).append((train_seed, ol.success))
                bar.update(1)
                done = out.results[method]
                bar.set_postfix(method=method, success=f"{np.mean([e.success for _, e in done]):.0%}")
    finally:
        bar.close()
    return out
