"""Method name → its typed config class (``configuration_<method>.py``).

Each config class validates the constraints of its own method; the config loader builds
one for every task and method so those errors surface at config time."""

from __future__ import annotations

import importlib

from kubm.errors import ConfigError

CONFIG_CLASSES = {"kubm": "KubmConfig", "kodex": "KodexConfig", "regression": "RegressionConfig",
                  "diffusion": "DiffusionConfig", "act": "ActConfig"}


def config_class(method: str) -> type:
    if method not in CONFIG_CLASSES:
        raise ConfigError(f"unknown method {method!r}; known methods: {sorted(CONFIG_CLASSES)}")
    module = importlib.import_module(f"kubm.policies.{method}.configuration_{method}")
    return getattr(module, CONFIG_CLASSES[method])
