"""The evaluator's inputs, loaded and checked: the test feature store, the flow AE and one
model directory per method and training seed. Every mismatch (another task, other
dimensions, another autoencoder, two models for one seed) is refused with a message that
names both sides and the fix, before any simulator starts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubm.config import TaskConfig
from kubm.errors import StageError
from kubm.evaluation.rollout import make_runner
from kubm.storage.episode_store import EpisodeStore


FEATURES_PRODUCER = "encode"

__all__ = ["CompatibilityError", "EvaluationError", "FeatureInfo", "LoadedModel", "check_compatibility",
           "checked_context", "context_function", "feature_info", "load_checked_ae", "load_models", "model_identity", "model_meta",
           "fit_numbers", "weights_digest"]


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


def weights_digest(model_dir: Path) -> str | None:
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


def fit_numbers(model_dir: Path, keys: Sequence[str]) -> dict[str, float | None]:
    """Numbers fit recorded in fit_summary.json (train_wall_s, train_cpu_s, torch_threads), read
    once; None for a key (or a file) that is missing or not a number."""
    try:
        summary = json.loads((Path(model_dir) / "fit_summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    out = {}
    for key in keys:
        try:
            out[key] = float(summary[key])
        except (KeyError, TypeError, ValueError):
            out[key] = None
    return out


def checked_context(fn, feat: FeatureInfo):
    """Wrap the context function so its dimension is checked against the feature store."""

    def wrapped(rgb0, seg0):
        c = np.asarray(fn(rgb0, seg0)).reshape(-1)
        if c.shape[0] != feat.d_c:
            raise CompatibilityError(f"the task's context has {c.shape[0]} dims here but {feat.path} has d_c={feat.d_c}; "
                                     "the features were encoded with another context setting (re-run encode)")
        return c

    return wrapped


@dataclass
class LoadedModel:
    method: str
    seed: int
    path: Path
    policy: Any


def load_checked_ae(ae_dir: Path, feat: FeatureInfo, test_features: Path, n_points_default: int,
            loader: Callable[[Path], Any] | None = None) -> tuple[Any, int]:
    """The flow AE the features were encoded with, and its number of points."""
    from kubm.features.flow_ae import ae_mismatch

    mismatch = ae_mismatch(ae_dir, feat.attrs, test_features)
    if mismatch:
        raise CompatibilityError(mismatch)
    ae = (loader or _default_load_ae)(Path(ae_dir))
    d_ae = _ae_latent_dim(ae)
    if d_ae is not None and d_ae != feat.d_flow:
        raise CompatibilityError(f"flow autoencoder {ae_dir} has a {d_ae}-d latent but {test_features} holds "
                                 f"{feat.d_flow}-d flow features; re-encode with this autoencoder")
    return ae, _ae_n_points(ae) or n_points_default


def load_models(models: list[Path], task: TaskConfig, feat: FeatureInfo,
                loader: Callable[[Path], Any] | None = None) -> list[LoadedModel]:
    """Every model directory, loaded and checked against the task and features, sorted by
    (method, seed)."""
    if not models:
        raise EvaluationError("no model directories given (--models)")
    loaded: list[LoadedModel] = []
    for i, m in enumerate(models):
        if not m.is_dir():
            raise EvaluationError(f"model directory {m} does not exist")
        policy = (loader or _default_load_policy)(m)
        make_runner(policy)  # fails early on a policy the loop cannot drive
        check_compatibility(policy, m, task, feat)
        method, seed = model_identity(policy, m, i)
        if any(x.method == method and x.seed == seed for x in loaded):
            raise EvaluationError(f"two models for method {method!r} training seed {seed} ({m})")
        loaded.append(LoadedModel(method, seed, m, policy))
    return sorted(loaded, key=lambda x: (x.method, x.seed))


def context_function(settings: dict, feat: FeatureInfo, fn=None):
    """The task's context extractor (or ``fn``), checked against the feature store's d_c."""
    return checked_context(fn or _default_context_fn(settings), feat)
