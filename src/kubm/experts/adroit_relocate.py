"""Scripted relocate expert: grasp the ball, carry it into the target sphere.

Privileged state (ball, target, grasp site) drives a damped-least-squares
Jacobian controller on the arm; the fingers follow fixed open/closed poses.
Every phase switch depends on the state (distances, finger closure, ball
height), never on the clock, so the same state always has the same future;
per-phase step limits exist only as a fallback against getting stuck.
"""

from __future__ import annotations

import mujoco
import numpy as np

from kubm.experts.base import ParametrisedExpert


def arm_ik_step(
    env, site: str, dx: np.ndarray, arm: list[int], q_arm: np.ndarray, damping: float = 0.02
) -> np.ndarray:
    """Joint step (for action indices `arm`) that moves `site` by dx (world, metres).

    Damped least squares on the site's position Jacobian. A joint whose step
    would leave its range is clamped at the limit and the rest re-solved for the
    remaining motion, so a saturated joint (e.g. ARTy at 0) hands its share on.
    """
    m, d = env.model, env.data
    jacp = np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jacp, None, m.site(site).id)
    jac = jacp[:, env.dof_adr[arm]]
    lo, hi = (env.joint_limits()[arm] - q_arm[:, None]).T  # allowed step range
    free = np.ones(len(arm), bool)
    dq = np.zeros(len(arm))
    for _ in range(len(arm)):
        rest = dx - jac[:, ~free] @ dq[~free]
        j = jac[:, free]
        dq[free] = j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(3), rest)
        out = free & ((dq < lo) | (dq > hi))
        if not out.any():
            break
        dq[out] = np.clip(dq[out], lo[out], hi[out])
        free &= ~out
    return dq


def site_velocity(env, site: str) -> np.ndarray:
    """World linear velocity of a site (m/s)."""
    m, d = env.model, env.data
    jacp = np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jacp, None, m.site(site).id)
    return jacp @ d.qvel


def cap(v: np.ndarray, norm: float) -> np.ndarray:
    n = np.linalg.norm(v)
    return v if n <= norm else v * (norm / n)


def finger_pose(names: list[str], values: dict[str, float]) -> np.ndarray:
    """Hand pose vector (action order) from {joint-name suffix or name: value}."""
    out = np.zeros(len(names))
    for i, n in enumerate(names):
        for key, v in values.items():
            if n == key or (key.startswith("*") and n.endswith(key[1:])):
                out[i] = v
    return out


class AdroitRelocateExpert(ParametrisedExpert):
    name = "adroit_relocate"

    DEFAULTS = dict(
        hover=0.10,  # m above the ball before descending
        grasp_offset=(0.0, -0.05, 0.0),  # grasp site relative to the ball when closing
        reach_tol=0.02,  # m: hover reached
        grasp_tol=0.01,  # m: close the fingers once this near the grasp pose ...
        stall_tol=0.03,  # ... or once this near and no longer moving (table/ball contact)
        stall_speed=0.03,  # m/s
        lift=0.10,  # m to lift above the table before carrying
        lifted_z=0.08,  # ball height (m) that counts as lifted
        reach_step=0.2,  # Cartesian step caps (m per control step)
        carry_step=0.2,
        closed_flex=(1.6, 1.2, 0.8),  # finger J2/J1/J0 when closed
        thumb_open=(0.9, 0.0, 0.0, 0.0, 0.0),  # THJ4..THJ0
        thumb_closed=(0.9, 1.2, -0.2, 0.0, -0.3),
        closure=0.7,  # fraction of the closed pose that counts as closed ...
        stall_flex_speed=0.2,  # ... or fingers blocked by the ball (rad/s)
        slide_kd=0.1,  # s: velocity feedback that damps the heavy slide joints
        drop_dist=0.08,  # m grasp-to-ball: the ball was lost, start over
        max_phase_steps=80,  # fallback only
    )

    def reset(self, env, seed: int) -> None:
        names = env.joint_names
        self.arm = [i for i, n in enumerate(names) if n.startswith("AR")]
        self.pos_arm = [i for i, n in enumerate(names) if n in ("ARTx", "ARTy", "ARTz", "ARRx")]
        self.slide = np.array([names[i].startswith("ART") for i in self.arm])
        self.hand = [i for i, n in enumerate(names) if not n.startswith("AR")]
        p = self.p
        th_names = ["THJ4", "THJ3", "THJ2", "THJ1", "THJ0"]
        f2, f1, f0 = p["closed_flex"]
        self.open = finger_pose(names, dict(zip(th_names, p["thumb_open"])))
        self.closed = finger_pose(names, {"*J2": f2, "*J1": f1, "*J0": f0, **dict(zip(th_names, p["thumb_closed"]))})
        self.flex = [i for i, n in enumerate(names) if n[:2] in ("FF", "MF", "RF") and n[-2:] in ("J2", "J1")]
        self.phase, self.n_in_phase = "reach", 0

    def _state(self, env):
        d = env.data
        return d.site("S_grasp").xpos.copy(), d.body("Object").xpos.copy(), d.site("target").xpos.copy()

    def _arm_targets(self, env, q, goal, step):
        """Arm targets moving the grasp site toward `goal`; yaw and roll stay at 0."""
        grasp = env.data.site("S_grasp").xpos
        target = np.zeros(env.action_dim)
        target[self.pos_arm] = q[self.pos_arm] + arm_ik_step(
            env, "S_grasp", cap(goal - grasp, step), self.pos_arm, q[self.pos_arm]
        )
        # Extra velocity feedback: the 5 kg slide joints are underdamped on their own.
        target[self.arm] -= self.p["slide_kd"] * self.slide * env.data.qvel[env.dof_adr[self.arm]]
        return target[self.arm]

    def _switch(self, phase):
        self.phase, self.n_in_phase = phase, 0

    def act(self, env) -> np.ndarray:
        p = self.p
        q = env.data.qpos[env.qpos_adr].copy()
        grasp, ball, target = self._state(env)
        off = np.asarray(p["grasp_offset"])
        self.n_in_phase += 1
        stuck = lambda: self.n_in_phase > p["max_phase_steps"]  # noqa: E731
        if self.phase == "reach":
            goal = ball + off + [0, 0, p["hover"]]
            if np.linalg.norm(grasp - goal) < p["reach_tol"] or stuck():
                self._switch("descend")
        if self.phase == "descend":
            goal = ball + off
            dist, speed = np.linalg.norm(grasp - goal), np.linalg.norm(site_velocity(env, "S_grasp"))
            if dist < p["grasp_tol"] or (dist < p["stall_tol"] and speed < p["stall_speed"]) or stuck():
                self._switch("close")
                self.hold = goal.copy()
        if self.phase == "close":
            goal = self.hold
            flex = np.mean(q[self.flex])
            stalled = flex > 0.5 and np.abs(env.data.qvel[env.dof_adr[self.flex]]).max() < p["stall_flex_speed"]
            closed = flex >= p["closure"] * np.mean(self.closed[self.flex]) or stalled
            if closed or stuck():
                self._switch("lift")
                self.lift_goal = grasp + [0, 0, p["lift"]]
        if self.phase == "lift":
            goal = self.lift_goal
            if ball[2] > p["lifted_z"] or stuck():
                self._switch("carry")
        if self.phase in ("lift", "carry") and np.linalg.norm(grasp - ball) > p["drop_dist"]:
            self._switch("reach")  # ball lost: start over
            goal = ball + off + [0, 0, p["hover"]]
        if self.phase == "carry":
            goal = grasp + (target - ball)
        step = p["carry_step"] if self.phase in ("lift", "carry") else p["reach_step"]
        action = q.copy()
        action[self.arm] = self._arm_targets(env, q, goal, step)
        action[self.hand] = (self.open if self.phase in ("reach", "descend") else self.closed)[self.hand]
        return action
