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

from tqdm import tqdm

from kubm.config import TaskConfig
from kubm.evaluation.models import LoadedModel, weights_digest
from kubm.evaluation.rollout import EpisodeResult, OnlinePerception, make_runner, run_episode

__all__ = ["EpisodeJob", "Episodes", "WorkerSpec", "build_perception", "run_models"]


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


@dataclass(frozen=True)
class EpisodeJob:
    """One rollout: model ``loaded[model]`` on test seed ``seed`` (the ``index``-th)."""
    model: int
    index: int
    seed: int
    record: bool  # write this episode's video
    ablate: bool  # also execute it open loop (a replanning method's ablation)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to rebuild the evaluator's inputs exactly as the parent
    did: the same checked loaders, so a worker's episodes are the parent's."""
    task: TaskConfig
    config: dict
    models: tuple[Path, ...]  # the loaded models' paths, in the parent's (method, seed) order
    ae_dir: Path
    test_features: Path
    n_points: int
    horizon: int
    root: Path
    art: Path
    ecfg: dict | None = None  # the protocol's evaluate settings, when not config["evaluate"]


@dataclass
class _Session:
    env: object
    loaded: list[LoadedModel]
    ae: object
    perception: OnlinePerception
    context_fn: object
    ecfg: dict
    horizon: int
    root: Path
    art: Path


def _jobs(loaded: list[LoadedModel], seeds: list[int], ecfg: dict) -> tuple[list[EpisodeJob], dict[int, int]]:
    """The episodes to roll out, and {model index: index of its identical twin}: a model whose
    weights equal an earlier one's of the same method reuses that one's episodes."""
    ablate = bool(ecfg.get("open_loop_ablation", False)) and bool(ecfg["replan"])
    video_seed = {x.method: min(y.seed for y in loaded if y.method == x.method) for x in loaded}
    first_by_digest: dict[tuple[str, str], int] = {}
    jobs, twins = [], {}
    for i, x in enumerate(loaded):
        digest = weights_digest(x.path)
        if digest and (x.method, digest) in first_by_digest:
            twins[i] = first_by_digest[(x.method, digest)]
            continue
        if digest:
            first_by_digest[(x.method, digest)] = i
        can_replan = make_runner(x.policy).can_replan
        jobs += [EpisodeJob(i, j, int(seed), x.seed == video_seed[x.method] and j < ecfg["videos"],
                            ablate and can_replan) for j, seed in enumerate(seeds)]
    return jobs, twins


def _execute(job: EpisodeJob, s: _Session) -> tuple[EpisodeResult, bool | None, str | None]:
    """Roll one episode out; returns its record (frames dropped), its open-loop success (None
    when not ablated) and its video's path relative to the eval.json folder."""
    from kubm.report.video import write_mp4

    x, ecfg = s.loaded[job.model], s.ecfg
    pert = ecfg.get("perturbation")  # a PerturbationSpec in the perturbed protocol

    def rollout(replan: bool, record: bool):
        return run_episode(s.env, x.policy, s.ae, s.perception, job.seed, context_fn=s.context_fn,
                           horizon=s.horizon, replan=replan, min_replan_interval=ecfg["min_replan_interval"],
                           record_video=record, perturbation=None if pert is None else pert.for_episode(job.seed),
                           context_every_step=bool(ecfg.get("context_every_step", False)),
                           context_replan_px=ecfg.get("context_replan_px"))

    ep = rollout(ecfg["replan"], job.record)
    video = None
    if job.record:
        rel = s.art / "videos" / f"{x.method}_seed{x.seed}_ep{job.seed}.mp4"
        write_mp4(s.root / rel, ep.frames, fps=max(1.0, s.env.fps / 4))
        video = rel.as_posix()
    ep.frames = None
    open_loop = None
    if job.ablate:
        # the same episode executed open loop; with no replan it is the same episode
        # (simulator, perception and policy are deterministic), so it is reused
        open_loop = ep.success if ep.replans == 0 else rollout(False, False).success
    return ep, open_loop, video


_WORKER: _Session | None = None


def _worker_init(spec: WorkerSpec) -> None:
    """Build this worker's simulator, perception, AE and models (once per process)."""
    global _WORKER
    import torch

    from kubm.evaluation.models import context_function, feature_info, load_checked_ae, load_models
    from kubm.sim.registry import make_env

    torch.set_num_threads(1)  # one core per worker
    feat = feature_info(spec.test_features)
    ae, n_points = load_checked_ae(spec.ae_dir, feat, spec.test_features, spec.n_points)
    loaded = load_models(list(spec.models), spec.task, feat)
    env = make_env(spec.task.suite, spec.task.task, spec.task.settings, render=True)
    _WORKER = _Session(env, loaded, ae, build_perception(spec.task, spec.config, env, n_points),
                       context_function(spec.task.settings, feat), spec.ecfg or spec.config["evaluate"], spec.horizon,
                       spec.root, spec.art)


def _worker_run(job: EpisodeJob):
    return job, _execute(job, _WORKER)


def run_models(env, loaded: list[LoadedModel], ae, perception: OnlinePerception, seeds: list[int], ecfg: dict, *,
               horizon: int, context_fn, root: Path, art: Path, progress: bool, desc: str, workers: int = 1,
               spec: WorkerSpec | None = None) -> Episodes:
    """Every model on every seed. With ``workers`` > 1 the episodes run in that many worker
    processes (each with its own simulator, built from ``spec``); every episode is seeded, so
    the records are the same as with one worker, in the same order."""
    for method in {x.method for x in loaded}:  # videos of an earlier run would linger unlisted
        for old in (root / art / "videos").glob(f"{method}_seed*_ep*.mp4"):
            old.unlink()
    jobs, twins = _jobs(loaded, seeds, ecfg)
    done: dict[EpisodeJob, tuple[EpisodeResult, bool | None, str | None]] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="ep", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            session = _Session(env, loaded, ae, perception, context_fn, ecfg, horizon, root, art)
            for job in jobs:
                done[job] = _execute(job, session)
                bar.update(1)
        else:
            if spec is None:
                raise ValueError("workers > 1 needs a WorkerSpec to rebuild the inputs in each worker")
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn, not fork: a forked renderer (EGL, Vulkan) or torch thread pool is unsafe
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_worker_init,
                                     initargs=(spec,), mp_context=multiprocessing.get_context("spawn")) as pool:
                for fut in as_completed([pool.submit(_worker_run, job) for job in jobs]):
                    job, record = fut.result()
                    done[job] = record
                    bar.update(1)
    finally:
        bar.close()
    return _assemble(loaded, jobs, twins, done)


def _assemble(loaded, jobs, twins, done) -> Episodes:
    """The records in the evaluator's order: models by (method, seed), episodes by test seed."""
    out = Episodes()
    by_model: dict[int, list[EpisodeJob]] = {}
    for job in jobs:
        by_model.setdefault(job.model, []).append(job)
    for i, x in enumerate(loaded):
        if i in twins:
            twin = loaded[twins[i]].seed
            out.shared.setdefault(x.method, {})[x.seed] = twin
            out.results[x.method] += [(x.seed, ep) for s0, ep in out.results[x.method] if s0 == twin]
            if x.method in out.open_loop:
                out.open_loop[x.method] += [(x.seed, ok) for s0, ok in out.open_loop[x.method] if s0 == twin]
            continue
        for job in sorted(by_model.get(i, []), key=lambda j: j.index):
            ep, open_loop, video = done[job]
            out.results.setdefault(x.method, []).append((x.seed, ep))
            if video:
                out.videos.append(video)
            if open_loop is not None:
                out.open_loop.setdefault(x.method, []).append((x.seed, open_loop))
    return out
