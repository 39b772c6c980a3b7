"""Typed configuration of the time-indexed regression baseline (pipeline keys ``fit.regression.*``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kubm.policies.features import config_from_dict
from kubm.errors import ConfigError


@dataclass
class RegressionConfig:
    # --- pipeline keys: fit.regression.* -------------------------------------------------
    ridge: float = 0.1  # λ on standardised inputs: W_t = (XᵀX/N + λI)⁻¹ XᵀY_t/N (bias unpenalised)

    PIPELINE_KEYS = ("ridge",)

    def __post_init__(self) -> None:
        if not self.ridge >= 0:
            raise ConfigError(f"invalid regression config: ridge={self.ridge} must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressionConfig:
        return config_from_dict(cls, d, "regression")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
