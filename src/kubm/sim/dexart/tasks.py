"""Per-task definitions: objects, default cameras, privileged state and DexArt's success rules.

Success (DESIGN.md §2, DexArt `is_eval_done`):
- bucket: handle progress > 0.7 (>= 70 % of the way from lowered to upright) and the
  bucket base lifted more than 0.25 m above its height at reset; no contact requirement.
"""

from __future__ import annotations

import numpy as np

from kubm.sim.dexart import objects as O

TASKS = ("bucket", "faucet", "laptop", "toilet")
BUILT_TASKS = ("bucket",)

# Link names whose pixels form the manipulated object's mask (object_seg_ids order).
OBJECT_LINKS: dict[str, list[str]] = {
    "bucket": ["bucket_body", "bucket_handle"],
}

# Free cameras that keep hand and object in view over an episode at 128x128.
DEFAULT_CAMERAS: dict[str, dict] = {
    "bucket": dict(position=(0.4, -0.62, 0.6), lookat=(-0.08, 0.0, 0.3), fovy_deg=55.0),
}

# Layout of object_state(): (name, width) in order.
OBJECT_STATE_LAYOUT: dict[str, list[tuple[str, int]]] = {
    "bucket": [
        ("handle_angle", 1),
        ("progress", 1),
        ("base_lift", 1),
        ("base_pos", 3),
        ("base_quat", 4),
        ("handle_pos", 3),  # grip point: centre of the handle bar
        ("handle_quat", 4),
        ("palm_pos", 3),
        ("palm_quat", 4),
    ],
}

BUCKET_PROGRESS = 0.7
BUCKET_LIFT = 0.25


SPECS = {t: {"links": OBJECT_LINKS.get(t)} for t in TASKS}


def build_object(task: str, scene, rng: np.random.Generator, *, visual: bool) -> O.ArticulatedObject:
    sample, build = O.BUILDERS[task]
    return build(scene, sample(rng), visual=visual)


def base_lift(env) -> float:
    return float(env.obj.base.entity_pose.p[2] - env.obj.init_base_pose.p[2])


def object_state(env) -> np.ndarray:
    obj = env.obj
    if env.task == "bucket":
        base, grip, palm = obj.base.entity_pose, obj.grip_pose(), env.palm_pose()
        parts = [
            [obj.joint_angle()],
            [obj.progress()],
            [base_lift(env)],
            base.p,
            base.q,
            grip.p,
            grip.q,
            palm.p,
            palm.q,
        ]
        return np.concatenate([np.ravel(p) for p in parts])
    raise NotImplementedError(env.task)


def success(env) -> bool:
    obj = env.obj
    if env.task == "bucket":
        return obj.progress() > BUCKET_PROGRESS and base_lift(env) > BUCKET_LIFT
    raise NotImplementedError(env.task)
