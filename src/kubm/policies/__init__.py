"""Policies: one package per method, each with a typed config, a torch model with
``compute_loss``, a numpy-facing policy (``plan`` / ``predict_action``) and save/load as
``model.safetensors`` + ``config.json`` (whose "method" names the package).

``METHODS`` maps a method name to its policy class; ``load_policy(dir)`` loads any saved
model by the "method" in its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubm.errors import MissingInput
from kubm.policies.features import FeatureError, IncompatibleError, check_compatible
from kubm.policies.persistence import ModelFileError
from kubm.policies.act import ActPolicy
from kubm.policies.diffusion import DiffusionPolicy
from kubm.policies.kodex import KodexPolicy
from kubm.policies.kubm import KubmPolicy
from kubm.policies.regression import RegressionPolicy

METHODS: dict[str, type] = {"kubm": KubmPolicy, "kodex": KodexPolicy, "regression": RegressionPolicy,
                           "diffusion": DiffusionPolicy, "act": ActPolicy}


def load_policy(directory, *, task_id: str | None = None, feature_attrs: dict | None = None):
    """Load a saved policy of any method; with ``task_id`` / ``feature_attrs``, also check that
    it belongs to that task and fits those features (IncompatibleError otherwise)."""
    directory = Path(directory)
    cfg = directory / "config.json"
    if not cfg.is_file():
        raise MissingInput(f"{directory}: no config.json; not a saved model (run `kubm fit`)")
    try:
        method = json.loads(cfg.read_text()).get("method")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ModelFileError(f"{cfg}: not a valid model config ({type(e).__name__}: {e}); delete {directory} "
                             "and rerun its fit (`kubm fit` / snakemake), or `dvc pull` it again") from e
    if method not in METHODS:
        raise ModelFileError(f"{directory}: unknown method {method!r}; known methods: {sorted(METHODS)}")
    policy = METHODS[method].load(directory)
    if task_id is not None or feature_attrs is not None:
        check_compatible(policy, feature_attrs, task_id)
    return policy


__all__ = ["METHODS", "FeatureError", "IncompatibleError", "check_compatible", "load_policy"]
