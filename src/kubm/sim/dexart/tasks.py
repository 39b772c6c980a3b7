"""Per-task definitions: objects, default cameras, privileged state and DexArt's success rules.

Success (docs/design.md, "Benchmarks"; DexArt `is_eval_done`), with progress = 1 - |q - q_goal| / |q_start - q_goal|:
- bucket: progress > 0.7 (handle >= 70 % of the way from lowered to upright) and the
  bucket base lifted more than 0.25 m above its height at reset; no contact requirement.
- faucet: handle angle > 1.5 rad and DexArt's "state 3": palm within 0.2 m of the handle,
  >= 2 fingers and the palm in contact with the handle.
- laptop: lid progress > 0.95 and state 3 (0.2 m; >= 2 fingers + palm).
- toilet: lid progress > 0.95, palm within 0.1 m, >= 2 fingers in contact (palm not required).
The palm distance is measured to the part's grip point (handle bar / lever / lid front edge).
"""

from __future__ import annotations

import numpy as np

from kubm.sim.dexart import objects as O

TASKS = ("bucket", "faucet", "laptop", "toilet")
BUILT_TASKS = TASKS

# Link names whose pixels form the manipulated object's mask (object_seg_ids order):
# the object's base, then the manipulated part.
OBJECT_LINKS: dict[str, list[str]] = {
    "bucket": ["bucket_body", "bucket_handle"],
    "faucet": ["faucet_base", "faucet_handle"],
    "laptop": ["laptop_base", "laptop_lid"],
    "toilet": ["toilet_base", "toilet_lid"],
}

# Free cameras that keep hand and object in view over an episode at 128x128.
_CAM = dict(position=(0.5, -0.62, 0.62), fovy_deg=55.0)
DEFAULT_CAMERAS: dict[str, dict] = {
    "bucket": dict(_CAM, lookat=(0.0, 0.0, 0.3)),
    "faucet": dict(_CAM, lookat=(-0.05, 0.0, 0.22)),
    "laptop": dict(_CAM, lookat=(-0.04, 0.0, 0.18)),
    "toilet": dict(_CAM, lookat=(0.05, 0.0, 0.25)),
}

# Layout of object_state() (same for every task): (name, width) in order.
_LAYOUT = [
    ("part_angle", 1),  # the part's joint value (rad)
    ("progress", 1),  # 0 at reset, 1 fully raised / open
    ("base_lift", 1),  # base height above its height at reset (m)
    ("base_pos", 3),
    ("base_quat", 4),  # w x y z
    ("grip_pos", 3),  # grip point: handle bar centre, lever, lid front edge
    ("grip_quat", 4),
    ("palm_pos", 3),
    ("palm_quat", 4),
    ("contacts", 5),  # thumb, index, middle, ring, palm touching the part (0/1)
]
OBJECT_STATE_LAYOUT: dict[str, list[tuple[str, int]]] = {t: list(_LAYOUT) for t in TASKS}

CONTACT_NAMES = ("thumb", "index", "middle", "ring", "palm")
IMPULSE_THRESHOLD = 1e-2  # N s summed over a contact pair's points (DexArt's check_actor_pair_contacts)

BUCKET_PROGRESS, BUCKET_LIFT = 0.7, 0.25
FAUCET_ANGLE = 1.5
LID_PROGRESS = 0.95
PALM_DIST = {"faucet": 0.2, "laptop": 0.2, "toilet": 0.1}

SPECS = {t: {"links": OBJECT_LINKS[t]} for t in TASKS}


def build_object(task: str, scene, rng: np.random.Generator, *, visual: bool) -> O.ArticulatedObject:
    sample, build = O.BUILDERS[task]
    return build(scene, sample(rng), visual=visual)


def base_lift(env) -> float:
    return float(env.obj.base.entity_pose.p[2] - env.obj.init_base_pose.p[2])


def object_state(env) -> np.ndarray:
    obj = env.obj
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
        env.contact_flags().astype(float),
    ]
    return np.concatenate([np.ravel(p) for p in parts])


def success_rule(task: str, *, angle: float, progress: float, lift: float, palm_dist: float, contacts) -> bool:
    """DexArt's `is_eval_done` for one task, from the quantities it reads.

    contacts: 5 booleans (thumb, index, middle, ring, palm) touching the manipulated part."""
    c = np.asarray(contacts, bool)
    fingers = int(c[:4].sum())
    if task == "bucket":
        return progress > BUCKET_PROGRESS and lift > BUCKET_LIFT
    if task == "faucet":
        return angle > FAUCET_ANGLE and palm_dist < PALM_DIST[task] and fingers >= 2 and bool(c[4])
    if task == "laptop":
        return progress > LID_PROGRESS and palm_dist < PALM_DIST[task] and fingers >= 2 and bool(c[4])
    if task == "toilet":
        return progress > LID_PROGRESS and palm_dist < PALM_DIST[task] and fingers >= 2
    raise ValueError(f"unknown dexart task {task!r}")


def success(env) -> bool:
    obj = env.obj
    contacts = env.contact_flags() if env.task != "bucket" else np.zeros(5, bool)
    return success_rule(
        env.task,
        angle=obj.joint_angle(),
        progress=obj.progress(),
        lift=base_lift(env),
        palm_dist=float(np.linalg.norm(env.palm_pose().p - obj.grip_pose().p)),
        contacts=contacts,
    )
