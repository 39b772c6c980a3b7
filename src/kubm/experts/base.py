"""The contract for privileged-state experts used by `collect`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kubm.sim.base import ManipulationEnv


class Expert(Protocol):
    name: str

    def reset(self, env: ManipulationEnv, seed: int) -> None:
        """Called right after env.reset(seed); clears phase state."""

    def act(self, env: ManipulationEnv) -> np.ndarray:
        """Next joint-position target (d_q,), from privileged simulator state.

        Phase switches must depend on the state (e.g. palm-to-ball distance),
        never on the clock alone: K-UBM needs the same state to have one future.
        """


class ParametrisedExpert:
    """Base for experts tuned by a `DEFAULTS` dict that config `expert.params` may override."""

    name: str = "expert"
    DEFAULTS: dict = {}

    def __init__(self, params: dict | None = None):
        unknown = set(params or {}) - set(self.DEFAULTS)
        if unknown:  # a typo in config must not silently fall back to the default
            raise ValueError(f"unknown {self.name} params {sorted(unknown)}; known: {sorted(self.DEFAULTS)}")
        self.p = {**self.DEFAULTS, **(params or {})}
