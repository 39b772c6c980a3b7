"""Scripted privileged-state experts for the DexArt tasks (bucket so far).

They follow `kubm.experts.base.Expert` (`name`, `reset(env, seed)`, `act(env)`) and
drive the arm by Jacobian control of the palm centre (`DexArtEnv.arm_targets_for_twist`):
a Cartesian velocity toward a goal pose is integrated into arm joint targets.

Every phase switch depends on the state (distances, finger motion, handle progress,
lift height), never on the clock, so one state has one future.
"""

from __future__ import annotations

import numpy as np

from kubm.sim.dexart import robot as R


def _rotvec(m: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix."""
    c = np.clip((np.trace(m) - 1) / 2, -1.0, 1.0)
    a = np.arccos(c)
    if a < 1e-6:
        return np.zeros(3)
    return a / (2 * np.sin(a)) * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])


def _mat(pose) -> np.ndarray:
    return pose.to_transformation_matrix().astype(np.float64)


def hand_pose(env, amount: float) -> np.ndarray:
    """Allegro joint targets for a power grasp closed by `amount` (0 = open)."""
    q = np.zeros(R.HAND_DOF)
    for f in range(3):  # index, middle, ring: joints 1-3 flex
        q[4 * f + 1] = amount
        q[4 * f + 2] = amount
        q[4 * f + 3] = 0.8 * amount
    q[12] = 1.3  # thumb rotated under the palm
    q[13] = 0.3 + 0.5 * amount
    q[14] = 0.5 * amount
    q[15] = 0.6 * amount
    lim = env.joint_limits()[R.ARM_DOF :]
    return np.clip(q, lim[:, 0], lim[:, 1])


class DexArtBucketExpert:
    """Grasp the lowered bail from above, swing it upright about its pivots, lift.

    Phases: reach (hover above the bar) -> descend (bar under the proximal finger
    segments) -> close (until the fingers are flexed `min_flex`) -> raise (carry the
    grasp along the handle's arc, the desired angle advancing `raise_rate` per step,
    until progress > `raise_until`) -> lift (straight up until the base is `lift_to` m
    above its start, then hold).
    """

    name = "dexart_bucket"

    def __init__(self, params: dict | None = None):
        p = dict(
            hover=0.07,  # m above the grasp pose while reaching
            grasp_dx=-0.07,  # palm centre behind the bar (fingers point +x)
            grasp_dz=0.02,  # palm centre above the bar's centre
            close=1.6,  # finger flexion of the grasp (rad)
            min_flex=0.3,  # closing ends once the fingers are this flexed around the bar
            stall_vel=100.0,  # ... and move slower than this (mean |rad/s|; off by default)
            raise_rate=0.04,  # raise: desired handle angle advance per step (rad)
            raise_until=0.9,
            lift_to=0.32,
            vmax=0.25,  # m/s
            kp=3.0,
            kr=3.0,
            tol_reach=0.015,
            tol_descend=0.01,
        )
        unknown = set(params or {}) - set(p)
        if unknown:
            raise ValueError(f"unknown {self.name} params {sorted(unknown)}; allowed: {sorted(p)}")
        p.update(params or {})
        self.p = p

    def reset(self, env, seed: int) -> None:
        self.phase = "reach"
        self.target = env.qpos_full().copy()
        self.r_down = _mat(env.palm_pose())[:3, :3]  # palm down, fingers forward (reset pose)
        self.grasp_rel = None
        self.phi = None
        self.r_lift = None

    def _flexion(self, env) -> float:
        q = env.qpos_full()[R.ARM_DOF :]
        return float(np.mean([q[4 * f + 1] for f in range(3)]))

    def act(self, env) -> np.ndarray:
        p = self.p
        obj = env.obj
        palm = _mat(env.palm_pose())
        pos = palm[:3, 3]
        bar = obj.grip_pose().p.astype(np.float64)
        grasp = bar + np.array([p["grasp_dx"], 0.0, p["grasp_dz"]])
        r_des, w_gain, hand = self.r_down, p["kr"], 0.0

        if self.phase == "reach":
            goal = grasp + np.array([0.0, 0.0, p["hover"]])
            if np.linalg.norm(goal - pos) < p["tol_reach"]:
                self.phase = "descend"
        if self.phase == "descend":
            goal = grasp
            if np.linalg.norm(goal - pos) < p["tol_descend"]:
                self.phase = "close"
        if self.phase == "close":
            goal = grasp
            flex = self._flexion(env)
            hand = p["close"]
            qvel = np.asarray(env.robot.get_qvel())[env._perm][R.ARM_DOF :]
            flex_vel = np.abs([qvel[4 * f + k] for f in range(3) for k in (1, 2, 3)]).mean()
            if flex > p["min_flex"] and flex_vel < p["stall_vel"]:  # fingers closed as far as they go
                self.phase = "raise"
        if self.phase in ("raise", "lift"):
            hand = p["close"]  # full flexion target: the finger torque limit sets the grip
        if self.phase == "raise":
            if self.grasp_rel is None:  # palm pose in the handle's frame, fixed at the grasp
                self.grasp_rel = np.linalg.inv(_mat(obj.part.entity_pose)) @ palm
                self.phi = obj.joint_angle()
            # Desired handle angle advances along the arc; the palm keeps its grasp on it.
            self.phi = min(self.phi + p["raise_rate"], max(obj.q_goal, self.phi))
            joint = _mat(obj.joint.get_global_pose())  # x axis = hinge axis
            d = self.phi - obj.joint_angle()
            rot = np.eye(4)
            rot[1:3, 1:3] = [[np.cos(d), -np.sin(d)], [np.sin(d), np.cos(d)]]
            desired = joint @ rot @ np.linalg.inv(joint) @ _mat(obj.part.entity_pose) @ self.grasp_rel
            goal, r_des = desired[:3, 3], desired[:3, :3]
            if obj.progress() > p["raise_until"]:
                self.phase = "lift"
                self.r_lift = palm[:3, :3]
        if self.phase == "lift":
            lift = float(obj.base.entity_pose.p[2] - obj.init_base_pose.p[2])
            goal = pos + np.array([0.0, 0.0, np.clip(p["lift_to"] - lift, -0.05, 0.06)])
            r_des = self.r_lift  # keep the orientation the raise ended with

        v = p["kp"] * (goal - pos)
        n = np.linalg.norm(v)
        if n > p["vmax"]:
            v *= p["vmax"] / n
        w = w_gain * _rotvec(r_des @ palm[:3, :3].T)
        arm = env.arm_targets_for_twist(np.concatenate([v, w]), q=self.target)
        q_arm = env.qpos_full()[: R.ARM_DOF]
        self.target[: R.ARM_DOF] = np.clip(arm, q_arm - 0.15, q_arm + 0.15)  # no wind-up when blocked
        self.target[R.ARM_DOF :] = hand_pose(env, hand)
        return self.target.copy()


EXPERTS = {"dexart_bucket": DexArtBucketExpert}
