"""evaluate: every trained model of a task, rolled out in the simulator on the test seeds.

One evaluator for every method (issue 7): a model directory is loaded with
``kubm.policies.load_policy`` and driven through ``kubm.evaluation.rollout`` (planning
policies with replanning, or receding-horizon ``act`` policies). Models are grouped by
method; each method gets success with std over training seeds and a pooled Wilson interval,
per-seed and per-episode records, latency, smoothness and replans (DESIGN §5). Writes
``eval.json`` (schema-checked, atomically), videos of the first episodes of training seed 0
and a flow-error plot per method next to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig
from kubm.evaluation.metrics import distinct_wilson_interval
from kubm.evaluation.report import STATISTICS, method_summary, plot_flow_error, write_eval
from kubm.evaluation.rollout import EpisodeResult, OnlinePerception, make_runner, run_episode
from kubm.provenance import git_revision, package_versions
from kubm.storage.episode_store import EpisodeStore
from kubm.errors import StageError

log = logging.getLogger(__name__)

FEATURES_PRODUCER = "encode"


class EvaluationError(StageError):
    """The evaluation cannot run; the message says what is missing and how to fix it."""


class CompatibilityError(EvaluationError):
    """A model, autoencoder or feature store belongs to another task or has other dimensions."""


@dataclass
class FeatureInfo:
    path: Path
    suite: str | None
    task: str | None
    d_q: int
    d_flow: int
    d_c: int
    attrs: dict

    def as_dict(self) -> dict:
        return {"suite": self.suite, "task": self.task, "d_q": self.d_q, "d_flow": self.d_flow, "d_c": self.d_c}


def feature_info(path: Path) -> FeatureInfo:
    store = EpisodeStore.open(path, producer=FEATURES_PRODUCER, required=["flow", "qpos"])
    shape = {k: store._data(k).shape for k in store.keys()}
    d_c = int(shape["context"][1]) if "context" in shape and len(shape["context"]) > 1 else 0
    return FeatureInfo(Path(path), store.attrs.get("suite"), store.attrs.get("task"), int(shape["qpos"][1]),
                       int(shape["flow"][1]), d_c, store.attrs)


def model_meta(policy, model_dir: Path) -> dict:
    """What a model says about itself: its config.json, with gaps filled from the loaded
    policy's attributes (method, seed, task_id, d_q, d_flow, d_c)."""
    meta: dict = {}
    f = Path(model_dir) / "config.json"
    if f.is_file():
        try:
            meta.update(json.loads(f.read_text()))
        except json.JSONDecodeError as e:
            raise CompatibilityError(f"{f}: not valid JSON ({e})") from e
    for key, attr in (("method", "method"), ("seed", "seed"), ("task", "task_id"),
                      ("d_q", "d_q"), ("d_flow", "d_flow"), ("d_c", "d_c")):
        if meta.get(key) is None:
            try:
                value = getattr(policy, attr, None)
            except Exception:  # a property that cannot be computed says nothing
                value = None
            if isinstance(value, (str, int, np.integer)):
                meta[key] = value
    return meta


def model_identity(policy, model_dir: Path, index: int) -> tuple[str, int]:
    """(method, training seed) of a model: from its config, else from models/.../{method}/seed{k}."""
    meta = model_meta(policy, model_dir)
    method = meta.get("method") or Path(model_dir).resolve().parent.name
    seed = meta.get("seed")
    if seed is None:
        m = re.fullmatch(r"seed(\d+)", Path(model_dir).name)
        seed = int(m.group(1)) if m else index
    return str(method), int(seed)


def check_compatibility(policy, model_dir: Path, task: TaskConfig, feat: FeatureInfo) -> None:
    """The model must be for this task and use the feature store's dimensions.

    Runs the policies package's own check (``kubm.policies.check_compatible``) for policies
    that expose d_q / d_flow / d_c, then compares the task id and d_q / d_flow / d_c the model records.
    """
    attrs = {**feat.attrs, **feat.as_dict()}
    try:
        from kubm.policies import check_compatible as policy_check
    except ImportError:
        policy_check = None
    if policy_check is not None and all(hasattr(policy, k) for k in ("d_q", "d_flow", "d_c")):
        try:
            policy_check(policy, attrs, task.id)
        except ValueError as e:
            raise CompatibilityError(f"model {model_dir} cannot be evaluated on {task.id} with {feat.path}: {e}") from e
    meta = model_meta(policy, model_dir)
    suite, tname = meta.get("suite"), meta.get("task")
    if isinstance(tname, str) and "/" in tname:
        suite, tname = tname.split("/", 1)
    if (suite is not None and suite != task.suite) or (tname is not None and tname != task.task):
        raise CompatibilityError(f"model {model_dir} was trained on {suite}/{tname}, not {task.id}; "
                                 f"pass the models of {task.id} (models/{task.suite}/{task.task}/<method>/seed<k>)")
    for dim in ("d_q", "d_flow", "d_c"):
        have, want = meta.get(dim), getattr(feat, dim)
        if have is not None and int(have) != want:
            raise CompatibilityError(f"model {model_dir} has {dim}={have} but the feature store {feat.path} has "
                                     f"{dim}={want}; the model was fit on other features (refit it, or pass the "
                                     "matching --test store)")


def _ae_latent_dim(ae) -> int | None:
    for obj in (ae, getattr(ae, "config", None)):
        for k in ("latent_dim", "d_flow"):
            v = obj.get(k) if isinstance(obj, dict) else getattr(obj, k, None)
            if v is not None:
                return int(v)
    return None


def _ae_n_points(ae) -> int | None:
    for obj in (ae, getattr(ae, "config", None)):
        v = obj.get("n_points") if isinstance(obj, dict) else getattr(obj, "n_points", None)
        if v is not None:
            return int(v)
    return None


def _default_load_policy(path: Path):
    try:
        from kubm.policies import load_policy
    except ImportError as e:
        raise EvaluationError(f"kubm.policies.load_policy is not available ({e}); no method can be loaded") from e
    return load_policy(path)


def _default_load_ae(path: Path):
    try:
        from kubm.features.flow_ae import FlowAE
    except ImportError as e:
        raise EvaluationError(f"kubm.features.flow_ae is not available ({e}); the flow AE cannot be loaded") from e
    return FlowAE.load(path)


def _default_context_fn(settings: dict) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    try:
        from kubm.features.context import extract_context
    except ImportError as e:
        raise EvaluationError(f"kubm.features.context is not available ({e}); the task context cannot be "
                              "extracted") from e

    def fn(rgb0, seg0):
        h, w = rgb0.shape[:2]
        return extract_context(settings, rgb0, seg0, w, h)

    return fn


def _config_hash(task: TaskConfig, config: dict, models: Sequence[Path]) -> str:
    model_cfgs = []
    for m in models:
        f = Path(m) / "config.json"
        model_cfgs.append(hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.is_file() else None)
    blob = json.dumps([task.hash(), [config.get(s) for s in ("evaluate", "segment", "track", "weights")], model_cfgs],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def _open_loop_summary(outcomes: list[tuple[int, bool]], twins: dict) -> dict:
    """Success of the replanning methods' models executed open loop, on the same seeds."""
    k = sum(ok for _, ok in outcomes)
    return {"success_rate": k / len(outcomes), "successes": int(k), "episodes": len(outcomes),
            "ci95": list(distinct_wilson_interval(outcomes, twins))}


def evaluate(task: TaskConfig, config: dict, models: list[Path], ae_dir: Path, test_features: Path, out: Path, *,
             progress: bool = True, load_policy: Callable[[Path], Any] | None = None,
             load_ae: Callable[[Path], Any] | None = None,
             context_fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None = None) -> dict:
    """Evaluate `models` (one dir per method and training seed) on task's test seeds; write `out`.

    load_policy / load_ae / context_fn replace kubm.policies.load_policy, FlowAE.load and
    kubm.features.context.extract_context (tests use fakes). Returns the eval.json document.
    """
    from kubm.sim.registry import make_env
    from kubm.stages.collect import camera_spec

    ecfg = config["evaluate"]
    settings = task.settings
    out = Path(out)
    root = out.parent
    # eval.json owns videos/ and plots/; another document (e.g. eval_noreplan.json for the
    # ablation) keeps its artifacts under its own name so neither overwrites the other.
    art = Path(".") if out.stem == "eval" else Path(out.stem)
    models = [Path(m) for m in models]
    if not models:
        raise EvaluationError("no model directories given (--models)")

    feat = feature_info(test_features)
    if feat.suite is None or feat.task is None:
        log.warning("%s records no suite/task attrs; cannot check that it belongs to %s", test_features, task.id)
    elif (feat.suite, feat.task) != (task.suite, task.task):
        raise CompatibilityError(f"feature store {test_features} is for {feat.suite}/{feat.task}, not {task.id}; "
                                 f"pass data/{task.suite}/{task.task}/features/test.zarr")
    from kubm.features.flow_ae import ae_mismatch

    mismatch = ae_mismatch(ae_dir, feat.attrs, test_features)
    if mismatch:
        raise CompatibilityError(mismatch)
    ae = (load_ae or _default_load_ae)(Path(ae_dir))
    d_ae = _ae_latent_dim(ae)
    if d_ae is not None and d_ae != feat.d_flow:
        raise CompatibilityError(f"flow autoencoder {ae_dir} has a {d_ae}-d latent but {test_features} holds "
                                 f"{feat.d_flow}-d flow features; re-encode with this autoencoder")
    n_points = _ae_n_points(ae) or config.get("track", {}).get("n_points", 256)

    loaded: list[tuple[str, int, Path, Any]] = []
    for i, m in enumerate(models):
        if not m.is_dir():
            raise EvaluationError(f"model directory {m} does not exist")
        policy = (load_policy or _default_load_policy)(m)
        make_runner(policy)  # fails early on a policy the loop cannot drive
        check_compatibility(policy, m, task, feat)
        method, seed = model_identity(policy, m, i)
        if any(x[0] == method and x[1] == seed for x in loaded):
            raise EvaluationError(f"two models for method {method!r} training seed {seed} ({m})")
        loaded.append((method, seed, m, policy))
    loaded.sort(key=lambda x: (x[0], x[1]))

    test_seeds = list(task.seeds("test"))
    n_eps = ecfg["episodes"]
    if n_eps > len(test_seeds):
        raise EvaluationError(f"evaluate.episodes={n_eps} exceeds the task's {len(test_seeds)} test seeds "
                         f"(suites.{task.suite}...seeds.test.count)")
    seeds = test_seeds[:n_eps]
    horizon = int(settings["horizon"])

    ctx_fn = _checked(context_fn or _default_context_fn(settings), feat)
    results: dict[str, list[tuple[int, EpisodeResult]]] = {}
    # success of the same models executed open loop (replanning's ablation), per method
    open_loop: dict[str, list[tuple[int, bool]]] = {}
    ablate = bool(ecfg.get("open_loop_ablation", False))
    videos: list[str] = []
    video_seed = {meth: min(s for mm, s, _, _ in loaded if mm == meth) for meth, *_ in loaded}
    from kubm.report.video import write_mp4

    env = make_env(task.suite, task.task, {**settings, "camera_spec": camera_spec(settings)}, render=True)
    bar = tqdm(total=len(loaded) * len(seeds), desc=f"evaluate {task.id}", unit="ep", disable=not progress)
    try:
        if env.action_dim != feat.d_q:
            raise CompatibilityError(f"{task.id} env has {env.action_dim} actions but {test_features} has "
                                     f"d_q={feat.d_q}")
        perception = build_perception(task, config, env, n_points)
        for method in {x[0] for x in loaded}:  # videos of an earlier run would linger unlisted
            for old in (root / art / "videos").glob(f"{method}_seed*_ep*.mp4"):
                old.unlink()
        # Closed-form methods (kodex, regression) fit identical weights for every training seed;
        # simulator and policy are deterministic, so such a model's episodes are those of its
        # twin: roll them out once and reuse them (recorded as "identical_to" per seed).
        first_by_digest: dict[tuple[str, str], int] = {}
        shared: dict[str, dict[int, int]] = {}
        for method, train_seed, m, policy in loaded:
            digest = _weights_digest(m)
            twin = first_by_digest.get((method, digest)) if digest else None
            if twin is not None:
                shared.setdefault(method, {})[train_seed] = twin
                for s0, ep in [x for x in results[method] if x[0] == twin]:
                    results[method].append((train_seed, ep))
                for s0, ok in [x for x in open_loop.get(method, []) if x[0] == twin]:
                    open_loop[method].append((train_seed, ok))
                bar.update(len(seeds))
                continue
            if digest:
                first_by_digest[(method, digest)] = train_seed
            ablate_policy = ablate and ecfg["replan"] and make_runner(policy).can_replan
            for j, seed in enumerate(seeds):
                record = train_seed == video_seed[method] and j < ecfg["videos"]
                ep = run_episode(env, policy, ae, perception, seed, context_fn=ctx_fn,
                                 horizon=horizon, replan=ecfg["replan"],
                                 min_replan_interval=ecfg["min_replan_interval"], record_video=record)
                if record:
                    rel = art / "videos" / f"{method}_seed{train_seed}_ep{seed}.mp4"
                    write_mp4(root / rel, ep.frames, fps=max(1.0, env.fps / 4))
                    videos.append(rel.as_posix())
                ep.frames = None
                results.setdefault(method, []).append((train_seed, ep))
                if ablate_policy:
                    # the same episode executed open loop; with no replan it is the same episode
                    # (simulator, perception and policy are deterministic), so it is reused
                    ol = ep if ep.replans == 0 else run_episode(
                        env, policy, ae, perception, seed, context_fn=ctx_fn, horizon=horizon, replan=False)
                    open_loop.setdefault(method, []).append((train_seed, ol.success))
                bar.update(1)
                done = results[method]
                bar.set_postfix(method=method, success=f"{np.mean([e.success for _, e in done]):.0%}")
    finally:
        bar.close()
        env.close()

    (root / art).mkdir(parents=True, exist_ok=True)  # the artifacts folder exists even with no videos
    methods, plots = {}, []
    for method, res in results.items():
        mods = [(s, m, p) for mm, s, m, p in loaded if mm == method]
        threshold = getattr(mods[0][2], "replan_threshold_px", None)
        methods[method] = method_summary(res, replan_threshold_px=threshold, models=[str(m) for _, m, _ in mods])
        if method in shared:
            methods[method]["identical_to"] = {str(k): v for k, v in sorted(shared[method].items())}
            methods[method]["ci95"] = list(distinct_wilson_interval(((s, e.success) for s, e in res), shared[method]))
        if method in open_loop:
            methods[method]["open_loop"] = _open_loop_summary(open_loop[method], shared.get(method, {}))
        wall = [_train_wall_s(m) for _, m, _ in mods]
        if all(w is not None for w in wall):
            methods[method]["train_wall_s"] = float(np.mean(wall))
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
        "artifacts": {"videos": videos, "plots": plots},
        "versions": package_versions(),
        "config_hash": _config_hash(task, config, models),
        "git_revision": git_revision(),
    }
    write_eval(doc, out)
    for method, s in methods.items():
        log.info("%s %s: success %.0f%% ± %.0f%% (95%% CI %.0f–%.0f%%), replans %.1f, policy %.3f ms/step",
                 task.id, method, 100 * s["success_rate"], 100 * s["std"], 100 * s["ci95"][0], 100 * s["ci95"][1],
                 s["replans_mean"], s["latency_ms"]["policy"]["median"] or float("nan"))
    return doc


def _weights_digest(model_dir: Path) -> str | None:
    """sha256 over the model's weight files (model.*), or None when it has none."""
    files = sorted(Path(model_dir).glob("model.*"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    cfg = Path(model_dir) / "config.json"
    if cfg.is_file():  # everything that drives the policy, e.g. the replan threshold; not provenance
        meta = {k: v for k, v in json.loads(cfg.read_text()).items()
                if k not in ("seed", "trained", "git_revision", "versions")}
        h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def _train_wall_s(model_dir: Path) -> float | None:
    """CPU training seconds recorded by fit (fit_summary.json), if any."""
    f = Path(model_dir) / "fit_summary.json"
    try:
        return float(json.loads(f.read_text())["train_wall_s"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _checked(fn, feat: FeatureInfo):
    """Wrap the context function so its dimension is checked against the feature store."""

    def wrapped(rgb0, seg0):
        c = np.asarray(fn(rgb0, seg0)).reshape(-1)
        if c.shape[0] != feat.d_c:
            raise CompatibilityError(f"the task's context has {c.shape[0]} dims here but {feat.path} has d_c={feat.d_c}; "
                                     "the features were encoded with another context setting (re-run encode)")
        return c

    return wrapped
