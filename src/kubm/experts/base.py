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
