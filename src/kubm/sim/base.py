"""The contract every simulated task implements (Adroit on MuJoCo, DexArt on SAPIEN).

A task env is driven with joint-position targets (the K-UBM action), renders
RGB / depth / per-body segmentation from one configured camera, and exposes
privileged object state for experts and metrics only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from kubm.errors import SimError


class SimulatorError(SimError):
    """The simulator or its renderer cannot start; the message says what to install."""


@dataclass(frozen=True)
class CameraSpec:
    """Which camera renders, at what resolution.

    `name` is a camera defined by the scene (e.g. MuJoCo `vil_camera`); when it
    is None the env uses `position`/`lookat` to place a free camera.
    """

    name: str | None = None
    width: int = 128
    height: int = 128
    position: tuple[float, float, float] | None = None
    lookat: tuple[float, float, float] | None = None
    fovy_deg: float = 45.0


@dataclass
class Observation:
    """One step's observation. Image fields are None when rendering is off."""

    qpos: np.ndarray  # (d_q,) float32 robot joint positions, same order as actions
    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) float32, metres along the optical axis
    seg: np.ndarray | None = None  # (H, W) uint8 per-body id; 0 = background
    info: dict = field(default_factory=dict)


@runtime_checkable
class ManipulationEnv(Protocol):
    suite: str
    task: str
    action_dim: int  # d_q: number of joint-position targets
    horizon: int  # control steps per episode
    fps: float  # control rate (Hz)
    joint_names: list[str]  # names of the d_q controlled joints, action order
    object_seg_ids: list[int]  # seg ids that belong to the manipulated object

    def reset(self, seed: int) -> Observation: ...

    def step(self, action: np.ndarray) -> Observation: ...

    def success(self) -> bool: ...

    def object_state(self) -> np.ndarray: ...  # privileged, float32 (d_o,)

    def object_poses(self) -> np.ndarray: ...  # (B, 7) world pose (xyz, qw qx qy qz) per object_seg_ids body

    def joint_limits(self) -> np.ndarray: ...  # (d_q, 2) lower/upper

    def camera_intrinsics(self) -> np.ndarray: ...  # (3, 3) pinhole K in pixels

    def camera_extrinsics(self) -> np.ndarray: ...  # (4, 4) world->camera, OpenCV axes

    def close(self) -> None: ...
