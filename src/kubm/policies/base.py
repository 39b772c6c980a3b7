"""Contracts every policy package shares (docs/design.md, "Policies").

- :class:`Plan`: what a planner returns (K-UBM, KODex and the regression all plan).
- :class:`Planner` and :class:`Actor`: the two shapes of policy the evaluator drives. A
  planner returns a whole-episode plan from the first observation and may replan; an
  actor returns one action per step from a receding-horizon chunk.
- :class:`FitInputs`: what a method's ``fit`` gets from the fit stage.
- :class:`FitDiverged`: a fit produced non-finite numbers; nothing was saved.
- :func:`check_reload_plan` / :func:`check_reload_actor`: a saved model must behave
  exactly like the one in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kubm.errors import PolicyError

__all__ = ["Actor", "FitDiverged", "FitInputs", "Plan", "Planner", "TorchPolicyFiles", "check_reload_actor",
           "check_reload_plan", "provenance", "write_json"]

# config.json keys every saved policy writes (kubm.policies.features.policy_header)
HEADER_KEYS = frozenset({"method", "format", "task", "config_hash", "seed", "config", "d_q", "d_flow", "d_c",
                         "features"})


@dataclass
class Plan:
    actions: np.ndarray  # (T, d_q) joint-position targets a_0 … a_{T-1}, clipped to joint limits
    flow: np.ndarray | None  # (T, d_flow) predicted (unscaled) flow latents, or None (no flow model)


@runtime_checkable
class Planner(Protocol):
    method: str
    d_q: int  # dims of the features it was fitted on (checked against the stores)
    d_flow: int
    d_c: int
    task_id: str | None
    replan_threshold_px: float | None  # None: never replans

    def plan(self, qpos0, flow0, context, T: int) -> Plan: ...

    def save(self, directory) -> Path: ...


@runtime_checkable
class Actor(Protocol):
    method: str
    d_q: int
    d_flow: int
    d_c: int
    task_id: str | None

    def reset(self) -> None: ...

    def act(self, frame: dict) -> np.ndarray: ...

    def save(self, directory) -> Path: ...


@dataclass
class FitInputs:
    """One fit's inputs, as the fit stage hands them to ``policies/<m>/fitting_<m>.fit``."""

    task_id: str
    config_hash: str
    seed: int
    train: Any  # FeatureSet of the training demos
    test: Any  # FeatureSet of the test demos (diagnostics only, never for choices)
    ae: Any  # flow AE (``decode``), for the replanning threshold and px diagnostics
    progress: bool = False
    device: str = "auto"  # where the neural baselines train (kubm.policies.devices)


class FitDiverged(PolicyError):
    """Training produced a non-finite loss or an exploding K; nothing was saved."""

    exit_code = 1  # the inputs were fine; the optimisation failed (the CLI exits 1, not 2)

    def __init__(self, seed: int | None, iteration: int, reason: str, *, method: str = "K-UBM",
                 hint: str = "Lower fit.kubm.lr_K / lr_g or clip_K, or use fit.kubm.dynamics: modal "
                             "(stable by construction)."):
        self.seed, self.iteration, self.reason = seed, iteration, reason
        super().__init__(f"{method} fit diverged (seed {seed}, iteration {iteration}): {reason}. "
                         f"No model was saved. {hint}")


def provenance() -> dict:
    from kubm.provenance import git_revision, package_versions

    return {"git_revision": git_revision(), "versions": package_versions()}


def write_json(path: Path, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, default=float))


def check_reload_plan(policy, directory: Path, test) -> None:
    """The saved planner must reproduce the in-memory plan exactly."""
    from kubm.policies import load_policy

    ep = test.episodes[0]
    want = policy.plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions
    got = load_policy(directory).plan(ep.qpos[0], ep.flow[0], ep.context, len(ep)).actions
    if not np.array_equal(got, want):
        raise RuntimeError(f"{directory}: the reloaded model plans differently from the fitted one")


def check_reload_actor(policy, directory: Path, test, steps: int = 12) -> None:
    """The saved actor must act exactly like the in-memory one (same weights, same noise)."""
    from kubm.policies import load_policy

    ep = test.episodes[0]
    loaded = load_policy(directory)
    for p in (policy, loaded):
        p.reset()
    for t in range(min(steps, len(ep))):
        f = {"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t], "context": ep.context}
        if not np.array_equal(policy.act(f), loaded.act(f)):
            raise RuntimeError(f"{directory}: the reloaded model acts differently from the trained one (step {t})")
    policy.reset()


class TorchPolicyFiles:
    """Save / load of a policy around a torch model: ``model.safetensors`` + ``config.json``.

    The policy class sets ``METHOD``, ``FORMAT_VERSION``, ``LABEL``, ``OWN_KEYS`` (the
    config.json keys it writes beyond the header), ``MODEL_CLASS`` and ``CONFIG_CLASS``,
    keeps the model in ``self.model`` and writes its keys in ``config_dict()``. Keys that are
    neither header nor own keys (training record, provenance) come back in ``extra``.
    """

    METHOD: str
    FORMAT_VERSION: int
    LABEL: str
    OWN_KEYS: frozenset = frozenset()
    MODEL_CLASS: type
    CONFIG_CLASS: type

    def _init_policy(self, model, task_id, config_hash, feature_attrs, seed, extra) -> None:
        """The attributes every saved policy carries (the model in eval mode)."""
        from kubm.policies.features import recorded_feature_attrs

        self.model = model.eval()
        self.task_id, self.config_hash, self.seed = task_id, config_hash, seed
        self.feature_attrs = recorded_feature_attrs(feature_attrs)
        self.extra = dict(extra or {})
        self.source: str | None = None  # the directory it was loaded from

    def save(self, directory) -> Path:
        """Write model.safetensors + config.json into ``directory`` (created)."""
        from kubm.policies.persistence import write_policy

        return write_policy(directory, self.METHOD, self.model.state_dict(), self.config_dict())

    @classmethod
    def _load_kwargs(cls, meta: dict) -> dict:
        """Constructor arguments read from config.json beyond the shared ones."""
        return {}

    @classmethod
    def load(cls, directory):
        from kubm.policies.persistence import load_torch_state, read_policy

        directory, meta, w_path = read_policy(directory, cls.METHOD, cls.FORMAT_VERSION, cls.LABEL)
        model = cls.MODEL_CLASS(cls.CONFIG_CLASS.from_dict(meta["config"]), meta["d_q"], meta["d_flow"], meta["d_c"])
        load_torch_state(model, w_path, directory)
        known = HEADER_KEYS | cls.OWN_KEYS
        policy = cls(model, task_id=meta.get("task"), config_hash=meta.get("config_hash"),
                     feature_attrs=meta.get("features"), seed=meta.get("seed"),
                     extra={k: v for k, v in meta.items() if k not in known}, **cls._load_kwargs(meta))
        policy.source = str(directory)
        return policy
