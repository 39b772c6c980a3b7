"""The methods: name → typed config class, fit and policy class (docs/design.md, "Policies").

This table is the one list of methods. Adding a method is one package under
``kubm/policies/<name>/`` (``configuration_<name>.py``, ``modeling_<name>.py``,
``fitting_<name>.py``) plus one line here; the config schema, the fit and evaluate stages
and the DAG take the method list from ``METHODS``.

Entries are import paths, so reading the method list (config validation, the Snakefile)
imports no model code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from kubm.errors import ConfigError

__all__ = ["METHODS", "MethodSpec", "config_class", "fit_function", "method_names", "policy_class", "register"]


@dataclass(frozen=True)
class MethodSpec:
    config: str  # "module:Class" of the typed config (a dataclass with from_dict / to_dict)
    fit: str  # "module:function": fit(cfg, inputs: FitInputs, out: Path) -> summary dict
    policy: str  # "module:Class" with save() and a classmethod load(directory)


def _spec(name: str, config: str, policy: str) -> MethodSpec:
    pkg = f"kubm.policies.{name}"
    return MethodSpec(f"{pkg}.configuration_{name}:{config}", f"{pkg}.fitting_{name}:fit",
                      f"{pkg}.modeling_{name}:{policy}")


METHODS: dict[str, MethodSpec] = {
    "kubm": _spec("kubm", "KubmConfig", "KubmPolicy"),
    "kodex": _spec("kodex", "KodexConfig", "KodexPolicy"),
    "regression": _spec("regression", "RegressionConfig", "RegressionPolicy"),
    "diffusion": _spec("diffusion", "DiffusionConfig", "DiffusionPolicy"),
    "act": _spec("act", "ActConfig", "ActPolicy"),
}


def register(name: str, spec: MethodSpec) -> None:
    """Add a method at run time (a plugin or a test); the name must be new."""
    if name in METHODS:
        raise ConfigError(f"method {name!r} is already registered")
    METHODS[name] = spec


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known methods: {sorted(METHODS)}")
    return METHODS[method]


def config_class(method: str) -> type:
    return _resolve(_entry(method).config)


def fit_function(method: str):
    return _resolve(_entry(method).fit)


def policy_class(method: str) -> type:
    return _resolve(_entry(method).policy)
