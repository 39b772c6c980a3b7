"""Policies: one package per method, each with a typed config (``configuration_<m>.py``),
a model and numpy-facing policy (``modeling_<m>.py``: ``plan`` / ``act``, save/load as
``model.safetensors`` + ``config.json`` whose "method" names the package) and its fit
(``fitting_<m>.py``). ``registry.METHODS`` lists them; the shared contracts live in
``base.py`` (plan, protocols, fit inputs) and ``koopman.py`` (the planner K-UBM and KODex
share).

``load_policy(dir)`` loads any saved model by the "method" in its config.json. Importing
this package loads no model code: each method's modules are imported when first used.
"""

from __future__ import annotations

from pathlib import Path

from kubm.errors import MissingInput
from kubm.policies.features import FeatureError, IncompatibleError, check_compatible
from kubm.policies.persistence import ModelFileError, read_config
from kubm.policies.registry import METHODS, policy_class


def load_policy(directory, *, task_id: str | None = None, feature_attrs: dict | None = None):
    """Load a saved policy of any method; with ``task_id`` / ``feature_attrs``, also check that
    it belongs to that task and fits those features (IncompatibleError otherwise)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise MissingInput(f"{directory}: no config.json; not a saved model (run `kubm fit`)")
    method = read_config(directory).get("method")
    if method not in METHODS:
        raise ModelFileError(f"{directory}: unknown method {method!r}; known methods: {sorted(METHODS)}")
    policy = policy_class(method).load(directory)
    if task_id is not None or feature_attrs is not None:
        check_compatible(policy, feature_attrs, task_id)
    return policy


__all__ = ["METHODS", "FeatureError", "IncompatibleError", "check_compatible", "load_policy"]
