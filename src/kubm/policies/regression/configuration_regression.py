"""Typed configuration of the time-indexed regression baseline (pipeline keys ``fit.regression.*``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kubm.errors import ConfigError
from kubm.policies.configuration import PolicyConfig, pipeline_defaults


@dataclass
@pipeline_defaults("regression")
class RegressionConfig(PolicyConfig):
    LABEL = "regression"

    # --- pipeline keys: fit.regression.* (defaults: the config schema, via pipeline_defaults) ---
    ridge: float  # λ on standardised inputs: W_t = (XᵀX/N + λI)⁻¹ XᵀY_t/N (bias unpenalised)


    def __post_init__(self) -> None:
        if not self.ridge >= 0:
            raise ConfigError(f"invalid regression config: ridge={self.ridge} must be >= 0")


