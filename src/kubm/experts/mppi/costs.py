"""Task costs for MPPI, computed from privileged simulator state.

A cost names the sites, bodies and joints it reads; the optimiser gathers their
world positions (joint: qpos) for every sample and rollout step into a `Features`
with leading dims (K, H) and calls the cost, which returns per-step costs (K, H).
All costs are vectorised numpy over any leading dims, so the same function
scores one hand-made state (leading dims ()) or a whole batch of rollouts.

Adroit pen and hammer follow the measured prototype (README, "Experts");
door and relocate are shaped the same way (reach, then move the object to the
goal) so that every Adroit task can fall back to MPPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Features:
    """World positions of named sites/bodies (..., 3) and joint positions (...)."""

    site: dict[str, np.ndarray] = field(default_factory=dict)
    body: dict[str, np.ndarray] = field(default_factory=dict)
    joint: dict[str, np.ndarray] = field(default_factory=dict)


def _norm(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.square(x), axis=-1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(_norm(x), 1e-9)[..., None]


class Cost:
    """Base class: subclasses set the names they read and implement `__call__`."""

    name = "cost"
    sites: tuple[str, ...] = ()
    bodies: tuple[str, ...] = ()
    joints: tuple[str, ...] = ()

    def __call__(self, f: Features) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class PenCost(Cost):
    """10·dist + 2·(1 − dot), +1 if dist > 0.06, +10 if the pen falls below z = 0.075."""

    name = "pen"
    sites = ("eps_ball", "object_top", "object_bottom", "target_top", "target_bottom")
    bodies = ("Object",)

    def __call__(self, f: Features) -> np.ndarray:
        pen = f.body["Object"]
        dist = _norm(pen - f.site["eps_ball"])
        obj_dir = _unit(f.site["object_top"] - f.site["object_bottom"])
        goal_dir = _unit(f.site["target_top"] - f.site["target_bottom"])
        dot = np.sum(obj_dir * goal_dir, axis=-1)
        return 10.0 * dist + 2.0 * (1.0 - dot) + (dist > 0.06) + 10.0 * (pen[..., 2] < 0.075)


class HammerCost(Cost):
    """5·‖palm − handle‖ + ‖head − nail‖ + 10·‖nail − goal‖ + 5·max(0, 0.15 − handle z),
    +1 unless handle and head are both above z = 0.04 (the hammer is lifted off the table)."""

    name = "hammer"
    sites = ("S_grasp", "tool", "S_target", "nail_goal")
    bodies = ("Object",)

    def __call__(self, f: Features) -> np.ndarray:
        palm, handle, head = f.site["S_grasp"], f.body["Object"], f.site["tool"]
        nail, goal = f.site["S_target"], f.site["nail_goal"]
        lifted = (handle[..., 2] > 0.04) & (head[..., 2] > 0.04)
        return (
            5.0 * _norm(palm - handle)
            + _norm(head - nail)
            + 10.0 * _norm(nail - goal)
            + 5.0 * np.maximum(0.0, 0.15 - handle[..., 2])
            + (~lifted)
        )


class DoorCost(Cost):
    """‖palm − handle‖ + 2·(1.57 − hinge)⁺ + 0.5·(1.57 − latch)⁺ (success: hinge ≥ 1.35 rad).

    The latch must turn before the hinge can; both terms vanish once the door is open.
    """

    name = "door"
    sites = ("S_grasp", "S_handle")
    joints = ("door_hinge", "latch")
    open_angle = 1.57

    def __call__(self, f: Features) -> np.ndarray:
        reach = _norm(f.site["S_grasp"] - f.site["S_handle"])
        hinge, latch = f.joint["door_hinge"], f.joint["latch"]
        opened = np.maximum(0.0, self.open_angle - hinge)
        # Once the door swings, the latch no longer matters.
        unlatched = np.where(hinge > 0.2, 0.0, np.maximum(0.0, self.open_angle - latch))
        return reach + 2.0 * opened + 0.5 * unlatched


class RelocateCost(Cost):
    """‖palm − ball‖ + 10·‖ball − target‖ + 5·max(0, 0.08 − ball z) once the palm holds the ball.

    The lift term only counts when the ball is not yet at the target, so a target
    on the table stays reachable at zero cost.
    """

    name = "relocate"
    sites = ("S_grasp", "target")
    bodies = ("Object",)

    def __call__(self, f: Features) -> np.ndarray:
        palm, ball, target = f.site["S_grasp"], f.body["Object"], f.site["target"]
        reach = _norm(palm - ball)
        to_go = _norm(ball - target)
        near = reach < 0.05
        lift = np.where(near & (to_go > 0.1), np.maximum(0.0, 0.08 - ball[..., 2]), 0.0)
        return reach + 10.0 * to_go + 5.0 * lift


COSTS: dict[str, type[Cost]] = {c.name: c for c in (PenCost, HammerCost, DoorCost, RelocateCost)}


def make_cost(name: str) -> Cost:
    if name not in COSTS:
        raise ValueError(f"unknown MPPI cost {name!r}; known: {', '.join(sorted(COSTS))}")
    return COSTS[name]()
