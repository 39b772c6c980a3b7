"""Scripted door expert: reach the handle, grasp it, turn the latch, pull, let the door swing.

The arm uses the relocate expert's damped-least-squares controller on the grasp
site, plus the arm roll (ARRz, parallel to the latch axis) to turn the lever.
While unlatching and pulling, the grasp site is sent ahead along the lever's
(then the door's) arc, so the hand drags the mechanism along its own path; the
lead distance sets the force. The arm's yaw range ends before the handle
reaches 1.35 rad, so the hand pulls hard, lets go at `release_hinge` and
slides off the lever, and the door swings on. Phases switch on the state
(distances, finger closure, latch and hinge angles), never on the clock.
"""

from __future__ import annotations

import numpy as np

from kubm.experts.adroit_relocate import arm_ik_step, cap, finger_pose, site_velocity
from kubm.experts.base import ParametrisedExpert


class AdroitDoorExpert(ParametrisedExpert):
    name = "adroit_door"

    DEFAULTS = dict(
        pre_offset=(0.0, -0.08, 0.06),  # approach point relative to the handle
        grasp_offset=(0.0, -0.04, 0.03),  # grasp site relative to the handle when closing
        reach_tol=0.03,
        grasp_tol=0.015,
        stall_tol=0.03,
        stall_speed=0.03,
        closed_flex=(1.3, 1.3, 1.0),  # finger J2/J1/J0 for a hook around the lever
        thumb_open=(0.0, 0.0, 0.0, 0.0, 0.0),
        thumb_closed=(0.9, 1.2, -0.2, 0.0, -0.3),
        thumb_hook=(0.0, 0.0, 0.0, 0.0, 0.0),  # thumb while pulling (off the lever)
        closure=0.5,  # fraction of the closed pose that counts as closed ...
        stall_flex_speed=0.5,  # ... or fingers blocked by the lever (rad/s)
        latch_push=0.3,  # m: how far along the lever's arc the hand is sent (sets the force)
        latch_open=1.4,  # rad: latch angle at which the door is free
        roll_lead=0.4,  # rad: arm roll ahead of the latch angle (sets the turning torque)
        bolt_clear=0.3,  # rad of hinge after which the latch needs no more turning
        pull=0.9,  # m: how far along the door's arc the hand is sent (sets the force)
        release_hinge=0.8,  # rad: let go of the handle here
        release_dir=(0.0, 0.0, -0.1),  # m: where the hand goes when letting go
        step=0.6,  # Cartesian step cap (m per control step)
        slide_kd=0.1,
        max_phase_steps=80,  # fallback only
    )

    def reset(self, env, seed: int) -> None:
        names = env.joint_names
        p = self.p
        self.arm = [i for i, n in enumerate(names) if n.startswith("AR")]
        self.roll = names.index("ARRz")
        self.pos_arm = [i for i in self.arm if i != self.roll]
        self.slide = np.array([names[i].startswith("ART") for i in self.arm])
        self.hand = [i for i, n in enumerate(names) if not n.startswith("AR")]
        th = ["THJ4", "THJ3", "THJ2", "THJ1", "THJ0"]
        f2, f1, f0 = p["closed_flex"]
        self.open = finger_pose(names, dict(zip(th, p["thumb_open"])))
        self.closed = finger_pose(names, {"*J2": f2, "*J1": f1, "*J0": f0, **dict(zip(th, p["thumb_closed"]))})
        self.hook = finger_pose(names, {"*J2": f2, "*J1": f1, "*J0": f0, **dict(zip(th, p["thumb_hook"]))})
        self.flex = [i for i, n in enumerate(names) if n[:2] in ("FF", "MF", "RF") and n[-2:] in ("J2", "J1")]
        self.phase, self.n_in_phase = "reach", 0

    @staticmethod
    def _tangent(point, origin, axis):
        """Unit direction in which `point` moves when turned positively about the axis."""
        t = np.cross(axis, point - origin)
        return t / np.linalg.norm(t)

    def _switch(self, phase):
        self.phase, self.n_in_phase = phase, 0

    def act(self, env) -> np.ndarray:
        p, m, d = self.p, env.model, env.data
        q = d.qpos[env.qpos_adr].copy()
        grasp, handle = d.site("S_grasp").xpos.copy(), d.site("S_handle").xpos.copy()
        latch, hinge = float(d.joint("latch").qpos[0]), float(d.joint("door_hinge").qpos[0])
        b = m.body("latch").id
        lrot = d.xmat[b].reshape(3, 3)
        # The grasp pose is fixed in the latch frame, so it turns with the lever and door.
        hold = handle + lrot @ np.asarray(p["grasp_offset"])
        self.n_in_phase += 1
        stuck = lambda: self.n_in_phase > p["max_phase_steps"]  # noqa: E731

        if self.phase == "reach":
            goal = handle + p["pre_offset"]
            if np.linalg.norm(grasp - goal) < p["reach_tol"] or stuck():
                self._switch("approach")
        if self.phase == "approach":
            goal = hold
            dist, speed = np.linalg.norm(grasp - goal), np.linalg.norm(site_velocity(env, "S_grasp"))
            if dist < p["grasp_tol"] or (dist < p["stall_tol"] and speed < p["stall_speed"]) or stuck():
                self._switch("close")
        if self.phase == "close":
            goal = hold
            flex = np.mean(q[self.flex])
            stalled = flex > 0.5 and np.abs(d.qvel[env.dof_adr[self.flex]]).max() < p["stall_flex_speed"]
            if flex >= p["closure"] * np.mean(self.closed[self.flex]) or stalled or stuck():
                self._switch("unlatch")
        if self.phase == "unlatch":
            # Press the grasped lever along its arc.
            goal = hold + p["latch_push"] * self._tangent(handle, d.xpos[b], lrot[:, 1])
            if latch >= p["latch_open"]:
                self._switch("pull")
        if self.phase == "pull":
            j = m.joint("door_hinge").id
            goal = hold + p["pull"] * self._tangent(handle, d.xanchor[j], d.xaxis[j])
            if hinge >= p["release_hinge"]:
                self._switch("release")
        if self.phase == "release":  # let go and slide down off the lever
            goal = grasp + np.asarray(p["release_dir"])

        # Roll (ARRz, about world +y like the latch) turns the lever, and keeps
        # turning while pulling until the latch bolt has cleared the frame.
        turning = self.phase == "unlatch" or (self.phase == "pull" and hinge < p["bolt_clear"])
        if turning:
            roll = latch + p["roll_lead"]
        elif self.phase in ("pull", "release"):
            roll = latch
        else:
            roll = 0.0
        action = q.copy()
        dq = arm_ik_step(env, "S_grasp", cap(goal - grasp, p["step"]), self.pos_arm, q[self.pos_arm])
        action[self.pos_arm] = q[self.pos_arm] + dq
        action[self.roll] = roll
        action[self.arm] -= p["slide_kd"] * self.slide * d.qvel[env.dof_adr[self.arm]]
        fingers = self.open if self.phase in ("reach", "approach", "release") else self.closed
        if self.phase == "pull" and hinge >= p["bolt_clear"]:
            fingers = self.hook  # thumb off the lever: it would push the door shut
        action[self.hand] = fingers[self.hand]
        return action
