"""evaluate: every trained model of a task, rolled out in the simulator on the test seeds.

One evaluator for every method: a model directory is loaded with
``kubm.policies.load_policy`` and driven through ``kubm.evaluation.rollout`` (planning
policies with replanning, or receding-horizon ``act`` policies). Models are grouped by
method; each method gets success with std over training seeds and a pooled Wilson interval,
per-seed and per-episode records, latency, smoothness and replans (docs/design.md,
"eval.json"). Writes ``eval.json`` (schema-checked, atomically), videos of the first
episodes of training seed 0 and a flow-error plot per method next to it.

Inputs are loaded and checked in ``kubm.evaluation.models``; the episodes run in
``kubm.evaluation.episodes``; this module assembles the document.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kubm.config import TaskConfig
from kubm.evaluation.episodes import WorkerSpec, build_perception, run_models
from kubm.evaluation.metrics import distinct_wilson_interval
from kubm.evaluation.models import (
    CompatibilityError,
    EvaluationError,
    context_function,
    feature_info,
    load_checked_ae,
    load_models,
    fit_numbers,
)
from kubm.evaluation.perturbation import perturbation_spec
from kubm.evaluation.report import STATISTICS, method_summary, plot_flow_error, write_eval
from kubm.provenance import git_revision, package_versions
from kubm.stages.lineage import check_lineage, recorded_lineage

log = logging.getLogger(__name__)

__all__ = ["CompatibilityError", "EvaluationError", "evaluate"]


def _config_hash(task: TaskConfig, config: dict, models: Sequence[Path], perturbed: bool = False) -> str:
    model_cfgs = []
    for m in models:
        f = Path(m) / "config.json"
        model_cfgs.append(hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.is_file() else None)
    parts = [task.hash(), [config.get(s) for s in ("evaluate", "segment", "track", "weights")], model_cfgs]
    if perturbed:  # what only the perturbed protocol reads
        parts.append([config.get("perturbed"), task.settings.get("perturbation")])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _open_loop_summary(outcomes: list[tuple[int, bool]], twins: dict) -> dict:
    """Success of the replanning methods' models executed open loop, on the same seeds."""
    k = sum(ok for _, ok in outcomes)
    return {"success_rate": k / len(outcomes), "successes": int(k), "episodes": len(outcomes),
            "ci95": list(distinct_wilson_interval(outcomes, twins)),
            "per_episode_success": [bool(ok) for _, ok in outcomes]}  # aligned with the method's per_episode


def evaluate(task: TaskConfig, config: dict, models: list[Path], ae_dir: Path, test_features: Path, out: Path, *,
             progress: bool = True, load_policy: Callable[[Path], Any] | None = None,
             load_ae: Callable[[Path], Any] | None = None,
             context_fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None = None,
             workers: int = 1, perturbed: bool = False) -> dict:
    """Evaluate `models` (one dir per method and training seed) on task's test seeds; write `out`.

    perturbed: the perturbed protocol (docs/design.md, "Perturbations"): the same test seeds
    with the task's ``perturbation`` applied, the context observed every step, and the
    replanning methods also executed open loop.

    workers > 1 rolls the episodes out in that many processes, one simulator each; the
    document is the same as with one (timing fields aside).

    load_policy / load_ae / context_fn replace kubm.policies.load_policy, FlowAE.load and
    kubm.features.context.extract_context (tests use fakes). Returns the eval.json document.
    """
    from kubm.sim.registry import make_env

    ecfg, settings, out = config["evaluate"], task.settings, Path(out)
    pspec = None
    if perturbed:
        pspec = perturbation_spec(settings, task.id)
        ecfg = {**ecfg, "replan": True, "open_loop_ablation": True, "perturbation": pspec,
                "context_every_step": True, "context_replan_px": float(config["perturbed"]["context_replan_px"])}
    root = out.parent
    # eval.json owns videos/ and plots/; another document (e.g. eval_noreplan.json for the
    # ablation) keeps its artifacts under its own name so neither overwrites the other.
    art = Path(".") if out.stem == "eval" else Path(out.stem)
    models = [Path(m) for m in models]
    if not models:
        raise EvaluationError("no model directories given (--models)")
    if workers > 1 and (load_policy or load_ae or context_fn):
        raise EvaluationError("workers > 1 rebuilds the models, AE and context in each worker process: "
                              "custom loaders run with workers=1 only")
    feat = feature_info(test_features)
    check_lineage(test_features, feat.attrs.get("lineage"), config, task, "encode")
    check_lineage(ae_dir, recorded_lineage(ae_dir), config, task, "train_ae")
    if feat.suite is None or feat.task is None:
        log.warning("%s records no suite/task attrs; cannot check that it belongs to %s", test_features, task.id)
    elif (feat.suite, feat.task) != (task.suite, task.task):
        raise CompatibilityError(f"feature store {test_features} is for {feat.suite}/{feat.task}, not {task.id}; "
                                 f"pass data/{task.suite}/{task.task}/features/test.zarr")
    ae, n_points = load_checked_ae(Path(ae_dir), feat, test_features, config.get("track", {}).get("n_points", 256),
                                  load_ae)
    loaded = load_models(models, task, feat, load_policy)
    test_seeds = list(task.seeds("test"))
    if ecfg["episodes"] > len(test_seeds):
        raise EvaluationError(f"evaluate.episodes={ecfg['episodes']} exceeds the task's {len(test_seeds)} test seeds "
                              f"(suites.{task.suite}...seeds.test.count)")
    seeds, horizon = test_seeds[: ecfg["episodes"]], int(settings["horizon"])
    ctx_fn = context_function(settings, feat, context_fn)

    env = make_env(task.suite, task.task, settings, render=True)
    try:
        if env.action_dim != feat.d_q:
            raise CompatibilityError(f"{task.id} env has {env.action_dim} actions but {test_features} has "
                                     f"d_q={feat.d_q}")
        if pspec is not None and pspec.move not in env.movable_parts():
            raise EvaluationError(f"{task.id}: perturbation.move {pspec.move!r} is not a movable part; "
                                  f"allowed: {env.movable_parts() or 'none'}")
        perception = build_perception(task, config, env, n_points)
        spec = WorkerSpec(task, config, tuple(x.path for x in loaded), Path(ae_dir), Path(test_features),
                          config.get("track", {}).get("n_points", 256), horizon, root, art, ecfg)
        eps = run_models(env, loaded, ae, perception, seeds, ecfg, horizon=horizon, context_fn=ctx_fn, root=root,
                         art=art, progress=progress, desc=f"evaluate {task.id}", workers=workers, spec=spec)
    finally:
        env.close()

    (root / art).mkdir(parents=True, exist_ok=True)  # the artifacts folder exists even with no videos
    methods, plots = {}, []
    for method, res in eps.results.items():
        mods = [x for x in loaded if x.method == method]
        threshold = getattr(mods[0].policy, "replan_threshold_px", None)
        methods[method] = method_summary(res, replan_threshold_px=threshold, models=[str(x.path) for x in mods],
                                         perturbed=perturbed)
        if perturbed:
            fired = [e.perturbed_at is not None for _, e in res]
            methods[method]["perturbed_fraction"] = float(np.mean(fired))
        if method in eps.shared:
            methods[method]["identical_to"] = {str(k): v for k, v in sorted(eps.shared[method].items())}
            methods[method]["ci95"] = list(distinct_wilson_interval(((s, e.success) for s, e in res),
                                                                     eps.shared[method]))
        if method in eps.open_loop:
            methods[method]["open_loop"] = _open_loop_summary(eps.open_loop[method], eps.shared.get(method, {}))
        # training cost per seed (means), and the torch threads the fits ran with (results depend on it)
        recorded = [fit_numbers(x.path, ("train_wall_s", "train_cpu_s", "torch_threads")) for x in mods]
        for key in ("train_wall_s", "train_cpu_s"):
            if all(r[key] is not None for r in recorded):
                methods[method][key] = float(np.mean([r[key] for r in recorded]))
        threads = {r["torch_threads"] for r in recorded}
        if None not in threads:  # one count as an int; mixed counts (never made by the DAG) as their mean
            methods[method]["train_threads"] = int(threads.pop()) if len(threads) == 1 else float(np.mean(
                [r["torch_threads"] for r in recorded]))
        rel = art / "plots" / f"{method}_flow_error.png"
        plot_flow_error(res, root / rel, method=method, threshold_px=threshold)
        plots.append(rel.as_posix())

    doc = {
        "suite": task.suite,
        "task": task.task,
        "protocol": {
            "test_seeds": [int(s) for s in seeds],
            "episodes": len(seeds),
            "horizon": horizon,
            "success": "final step",
            "replan": bool(ecfg["replan"]),
            **({"perturbation": pspec.describe(), "context": {
                "observed": "every step", "replan_when_moved_px": ecfg["context_replan_px"]}} if perturbed else {}),
            "min_replan_interval": int(ecfg["min_replan_interval"]),
            "segment_backend": perception.segmenter.name,
            "track_backend": perception.tracker.describe().get("backend", ecfg["track_backend"]),
            "n_points": int(n_points),
            "features": str(test_features),
            "flow_ae": str(ae_dir),
            "paths": "artifacts are relative to this file's folder",
            "statistics": STATISTICS,
        },
        "methods": methods,
        "artifacts": {"videos": eps.videos, "plots": plots},
        "versions": package_versions(),
        "config_hash": _config_hash(task, config, models, perturbed),
        "git_revision": git_revision(),
    }
    write_eval(doc, out)
    for method, s in methods.items():
        log.info("%s %s: success %.0f%% ± %.0f%% (95%% CI %.0f–%.0f%%), replans %.1f, policy %.3f ms/step",
                 task.id, method, 100 * s["success_rate"], 100 * s["std"], 100 * s["ci95"][0], 100 * s["ci95"][1],
                 s["replans_mean"], s["latency_ms"]["policy"]["median"] or float("nan"))
    return doc
