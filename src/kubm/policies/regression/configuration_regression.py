"""Typed configuration of the time-indexed regression baseline (pipeline keys ``fit.regression.*``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kubm.errors import ConfigError
from kubm.policies.configuration import PolicyConfig


@dataclass
class RegressionConfig(PolicyConfig):
    LABEL = "regression"

    # --- pipeline keys: fit.regression.* -------------------------------------------------
    ridge: float = 0.1  # λ on standardised inputs: W_t = (XᵀX/N + λI)⁻¹ XᵀY_t/N (bias unpenalised)


    def __post_init__(self) -> None:
        if not self.ridge >= 0:
            raise ConfigError(f"invalid regression config: ridge={self.ridge} must be >= 0")


