"""Scripted privileged-state experts for the DexArt tasks (bucket so far; `_GraspAndTurnExpert`
is the shared reach / grasp / turn-the-part-about-its-joint machinery for the others).

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


def _palm_rotation(normal, fingers) -> np.ndarray:
    """Palm-centre frame with the given palm normal (x) and finger direction (z)."""
    x = np.asarray(normal, float) / np.linalg.norm(normal)
    z = np.asarray(fingers, float)
    z = z - (z @ x) * x
    z /= np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _about_axis(axis_frame: np.ndarray, angle: float) -> np.ndarray:
    """4x4 rotation by `angle` about the x axis of `axis_frame` (a joint frame, world)."""
    rot = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    rot[1:3, 1:3] = [[c, -s], [s, c]]
    return axis_frame @ rot @ np.linalg.inv(axis_frame)


class _GraspAndTurnExpert:
    """Shared machinery: reach -> descend -> close -> turn the part about its joint.

    Subclasses give the grasp pose (`_grasp`: palm position and rotation) and what
    happens after the turn (`_after_turn`). While turning, the palm keeps the pose it
    had in the part's frame when the grasp closed, and the desired joint angle advances
    `turn_rate` per step toward `turn_to` (a task-specific angle).
    """

    name = "dexart"
    DEFAULTS: dict = {}

    def __init__(self, params: dict | None = None):
        p = dict(
            hover=0.07,  # m above the grasp pose while reaching
            close=1.6,  # finger flexion of the grasp (rad)
            min_flex=0.3,  # closing ends once the fingers are this flexed around the part ...
            stall_vel=100.0,  # ... and move slower than this (mean |rad/s|; off by default)
            turn_rate=0.04,  # desired joint angle advance per step (rad)
            max_lead=0.3,  # ... leading the part's actual angle by at most this (rad)
            regrasp_dist=0.06,  # m: palm this far from its grasp on the part -> reach again
            vmax=0.25,  # m/s
            kp=3.0,
            kr=3.0,
            tol_reach=0.015,
            tol_descend=0.01,
            close_tol=10.0,  # closing also waits for the palm this near its grasp pose (m; off by default)
            vmax_close=0.25,  # m/s while closing
            ik_reach=False,  # reach in joint space toward an IK solution of the hover pose (off: palm twist)
            joint_step=0.06,  # rad per step, at most, per arm joint in an IK reach
            close_slip=100.0,  # part turned this far (rad) while closing -> reach again (off by default)
            close_touch=100.0,  # part turned this far (rad) while closing: touching it, closing ends
        )
        p.update(self.DEFAULTS)
        unknown = set(params or {}) - set(p)
        if unknown:
            raise ValueError(f"unknown {self.name} params {sorted(unknown)}; allowed: {sorted(p)}")
        p.update(params or {})
        self.p = p

    def reset(self, env, seed: int) -> None:
        self.phase = "reach"
        self.target = env.qpos_full().copy()
        self.grasp_rel = None
        self.phi = None
        self.r_hold = None
        self.q_ik = None
        self.close_angle = None

    def _flexion(self, env) -> float:
        q = env.qpos_full()[R.ARM_DOF :]
        return float(np.mean([q[4 * f + 1] for f in range(3)]))

    def _grasp(self, env) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _turn_to(self, env) -> float:
        return env.obj.q_goal

    def _turn_done(self, env) -> bool:
        return False

    def _after_turn(self, env, palm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._turn_goal(env, palm)

    def _turn_goal(self, env, palm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obj = env.obj
        part = _mat(obj.part.entity_pose)
        if self.grasp_rel is None:  # palm pose in the part's frame, fixed when the grasp closed
            self.grasp_rel = np.linalg.inv(part) @ palm
            self.phi = obj.joint_angle()
        goal_angle = self._turn_to(env)
        step = np.clip(goal_angle - self.phi, -self.p["turn_rate"], self.p["turn_rate"])
        angle = obj.joint_angle()  # the desired angle leads the part by at most max_lead
        self.phi = float(np.clip(self.phi + step, angle - self.p["max_lead"], angle + self.p["max_lead"]))
        joint = _mat(obj.joint.get_global_pose())  # x axis = joint axis
        desired = _about_axis(joint, self.phi - obj.joint_angle()) @ part @ self.grasp_rel
        return desired[:3, 3], desired[:3, :3]

    def _grasp_lost(self, env, palm: np.ndarray) -> bool:
        """The palm has left the pose it had on the part when the grasp closed."""
        held = _mat(env.obj.part.entity_pose) @ self.grasp_rel
        return bool(np.linalg.norm(held[:3, 3] - palm[:3, 3]) > self.p["regrasp_dist"])

    def act(self, env) -> np.ndarray:
        p = self.p
        palm = _mat(env.palm_pose())
        pos = palm[:3, 3]
        if self.phase in ("turn", "after") and self.grasp_rel is not None and self._grasp_lost(env, palm):
            self.phase, self.grasp_rel = "reach", None  # start over from the part's current pose
        grasp_pos, grasp_rot = self._grasp(env)
        r_des, hand = grasp_rot, 0.0

        if self.phase == "reach":
            goal = grasp_pos + np.array([0.0, 0.0, p["hover"]])
            if np.linalg.norm(goal - pos) < p["tol_reach"] and np.linalg.norm(_rotvec(r_des @ palm[:3, :3].T)) < 0.1:
                self.phase = "descend"
        if self.phase == "descend":
            goal = grasp_pos
        if self.phase == "descend" and np.linalg.norm(grasp_pos - pos) < p["tol_descend"]:
            self.phase, self.close_angle = "close", env.obj.joint_angle()
        if self.phase == "close" and abs(env.obj.joint_angle() - self.close_angle) > p["close_slip"]:
            self.phase = "reach"  # the part got away while closing: approach it afresh
            grasp_pos, grasp_rot = self._grasp(env)
            goal, r_des = grasp_pos + np.array([0.0, 0.0, p["hover"]]), grasp_rot
        if self.phase == "close":
            grasp_pos, grasp_rot = self._grasp(env)  # the grasp pose may depend on the phase
            goal, r_des = grasp_pos, grasp_rot
            near = np.linalg.norm(goal - pos) < p["close_tol"]
            near = near or abs(env.obj.joint_angle() - self.close_angle) > p["close_touch"]  # already moving it
            hand = p["close"] if near else 0.0  # close once at the grasp pose
            qvel = np.asarray(env.robot.get_qvel())[env._perm][R.ARM_DOF :]
            flex_vel = np.abs([qvel[4 * f + k] for f in range(3) for k in (1, 2, 3)]).mean()
            if self._flexion(env) > p["min_flex"] and flex_vel < p["stall_vel"] and near:
                self.phase = "turn"
        if self.phase in ("turn", "after"):
            hand = p["close"]  # full flexion target: the finger torque limit sets the grip
        if self.phase == "turn":
            goal, r_des = self._turn_goal(env, palm)
            if self._turn_done(env):
                self.phase = "after"
                self.r_hold = palm[:3, :3]
        if self.phase == "after":
            goal, r_des = self._after_turn(env, palm)

        q_goal = self._ik(env, goal, r_des) if self.phase == "reach" and p["ik_reach"] else None
        vmax = p["vmax_close"] if self.phase == "close" else p["vmax"]
        return self._command(env, palm, goal, r_des, hand, vmax, q_goal)

    def _command(self, env, palm, goal, r_des, hand: float, vmax: float, q_goal=None) -> np.ndarray:
        """The action: arm targets one joint step (at most `joint_step`) toward the IK solution
        `q_goal` when there is one, else a palm twist toward (goal, r_des) capped at `vmax`
        m/s; finger targets from `_hand(hand)`."""
        p = self.p
        if q_goal is not None:
            self.target[: R.ARM_DOF] += np.clip(q_goal - self.target[: R.ARM_DOF], -p["joint_step"], p["joint_step"])
        else:
            v = p["kp"] * (goal - palm[:3, 3])
            n = np.linalg.norm(v)
            if n > vmax:
                v *= vmax / n
            w = p["kr"] * _rotvec(r_des @ palm[:3, :3].T)
            arm = env.arm_targets_for_twist(np.concatenate([v, w]), q=self.target)
            q_arm = env.qpos_full()[: R.ARM_DOF]
            self.target[: R.ARM_DOF] = np.clip(arm, q_arm - 0.15, q_arm + 0.15)  # no wind-up when blocked
        self.target[R.ARM_DOF :] = self._hand(env, hand)
        return self.target.copy()

    def _hand(self, env, amount: float) -> np.ndarray:
        return hand_pose(env, amount)

    def _ik(self, env, pos, rot) -> np.ndarray | None:
        """Arm joint positions (action order) that put the palm centre at (pos, rot), by
        SAPIEN's CLIK from the previous solution (or the current targets); None if it fails."""
        if env._pin is None:
            env._pin = env.robot.create_pinocchio_model()
        perm = env._perm
        q0 = self.q_ik if self.q_ik is not None else self.target[: R.ARM_DOF]
        full = np.zeros(env.action_dim)
        full[perm] = np.concatenate([q0, self.target[R.ARM_DOF :]])
        mask = np.zeros(env.action_dim, np.int32)
        mask[perm[: R.ARM_DOF]] = 1
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = rot, pos
        import sapien

        goal = env.robot.root.entity_pose.inv() * sapien.Pose(m)
        q, ok, _ = env._pin.compute_inverse_kinematics(env._palm.index, goal, full, mask, max_iterations=200)
        if not ok:
            return None
        lim = env.joint_limits()[: R.ARM_DOF]
        self.q_ik = np.clip(np.asarray(q)[perm][: R.ARM_DOF], lim[:, 0], lim[:, 1])
        return self.q_ik


class DexArtBucketExpert(_GraspAndTurnExpert):
    """Grasp the lowered bail from above, swing it upright about its pivots, lift.

    Phases: reach (hover above the bar) -> descend (bar under the proximal finger
    segments) -> close (until the fingers are flexed `min_flex`) -> turn (carry the
    grasp along the handle's arc until progress > `raise_until`) -> after: lift
    straight up until the base is `lift_to` m above its start, then hold.
    """

    name = "dexart_bucket"
    DEFAULTS = dict(
        grasp_dx=-0.07,  # palm centre behind the bar (fingers point +x)
        grasp_dz=0.02,  # palm centre above the bar's centre
        raise_until=0.9,
        lift_to=0.32,
        max_lead=10.0,  # the bar rolls in the grip: no lead limit, no re-grasp
        regrasp_dist=10.0,
    )

    def _grasp(self, env):
        bar = env.obj.grip_pose().p.astype(np.float64)
        pos = bar + np.array([self.p["grasp_dx"], 0.0, self.p["grasp_dz"]])
        return pos, _palm_rotation([0, 0, -1], [1, 0, 0])  # palm down, fingers forward

    def _turn_done(self, env) -> bool:
        return env.obj.progress() > self.p["raise_until"]

    def _after_turn(self, env, palm):
        obj = env.obj
        lift = float(obj.base.entity_pose.p[2] - obj.init_base_pose.p[2])
        goal = palm[:3, 3] + np.array([0.0, 0.0, np.clip(self.p["lift_to"] - lift, -0.05, 0.06)])
        return goal, self.r_hold  # keep the orientation the raise ended with


class DexArtFaucetExpert(_GraspAndTurnExpert):
    """Hook the lever from the side it must move away from and carry it counter-clockwise.

    The palm is vertical and faces the way the lever's tip moves (its tangent `t`), fingers
    down and pre-curled into a C (proximal segments horizontal, middle segments up) that
    stays above the spout below the lever. Phases: reach (hover above a point `approach`
    m behind the lever) -> descend (to lever height, beside it) -> close (slide the C under
    the lever until the palm touches it, then tighten) -> turn (the grasp follows the lever
    about the vertical axis to `turn_to`) and hold there: palm and fingers stay on the lever
    (DexArt's contact rule).
    """

    name = "dexart_faucet"
    DEFAULTS = dict(
        grasp_gap=0.003,  # palm surface this far from the lever's surface
        grasp_dz=0.038,  # palm centre above the lever's axis
        hub_clear=0.065,  # palm centre this far out from the hub's / column's rim (ring finger clears them)
        tip_clear=0.0,  # ... but at most this far out from the lever's end (middle finger on the lever)
        approach=0.13,  # m behind the lever (along -t) while reaching and descending
        ik_reach=True,
        vmax_close=0.08,  # slide in gently: a hard knock flings the lever away
        close_slip=0.4,
        close_touch=0.04,
        min_flex=0.8,
        turn_to=1.9,  # past the handle's stop (1.8): the palm keeps pressing it there
        hover=0.1,
        close_tol=0.01,
        close=1.0,  # 0: an L slid under the lever, 1: curled up around it
    )

    def _lever_dir(self, env) -> np.ndarray:
        obj = env.obj
        axis_p = obj.joint.get_global_pose().p.astype(np.float64)
        u = obj.grip_pose().p.astype(np.float64) - axis_p
        u[2] = 0.0
        return u / np.linalg.norm(u)

    def _grasp(self, env):
        u = self._lever_dir(env)
        t = np.array([-u[1], u[0], 0.0])  # where the lever's tip moves as the angle grows
        grip = env.obj.grip_pose().p.astype(np.float64)
        back = float(env.obj.params.get("lever_radius", 0.01)) + self.p["grasp_gap"]
        if self.phase in ("reach", "descend"):
            back += self.p["approach"]
        axis_p = env.obj.joint.get_global_pose().p.astype(np.float64)
        r_grip = float((grip - axis_p) @ u)
        prm = env.obj.params
        r = max(prm.get("hub_radius", 0.03), prm.get("col_radius", 0.03)) + self.p["hub_clear"]
        if "lever_len" in prm:  # keep the middle finger on the lever
            r = min(r, prm["lever_len"] + self.p["tip_clear"])
        pos = grip + (r - r_grip) * u - back * t + np.array([0.0, 0.0, self.p["grasp_dz"]])
        return pos, _palm_rotation(t, [0, 0, -1])

    def _hand(self, env, amount: float) -> np.ndarray:
        q = np.zeros(R.HAND_DOF)
        for f in range(3):  # index, middle, ring: an L (proximal out) that closes into a C (middle up)
            q[4 * f + 1] = 1.5 + 0.3 * amount  # closed: at the joint limits, squeezing the lever
            q[4 * f + 2] = 1.9 * amount
            q[4 * f + 3] = 1.8 * amount
        q[12] = 1.3  # thumb tucked in front of the palm's heel
        q[13] = 0.3
        lim = env.joint_limits()[R.ARM_DOF :]
        return np.clip(q, lim[:, 0], lim[:, 1])

    def _flexion(self, env) -> float:
        q = env.qpos_full()[R.ARM_DOF :]
        return float(np.mean([q[4 * f + 2] for f in range(3)]))

    def _turn_to(self, env) -> float:
        return self.p["turn_to"]


class _LidExpert(_GraspAndTurnExpert):
    """Open a lid hinged at its back edge (laptop, toilet) by scooping it up with the backs of
    the fingers, let it fall onto its open stop, then grasp its top edge from above.

    The hand stays palm down, fingers forward (toward the hinge, `u`) and straight while it
    opens the lid. Phases: reach (IK to the highest point, up to `hover`, above the start of
    the scoop that the arm reaches) -> descend
    (to fingertip height just under the ajar lid, in front of its front edge) -> insert (slide
    in under the lid until the fingertips are `r` m from the hinge or the lid moves) -> lift
    (the fingertips' backs follow the lid's underside about the hinge at radius `r`, leading
    the lid by at most `lead` rad, until the lid is `pass_by` rad past vertical: its open stop
    is past vertical, so gravity carries it there) -> over (palm `hover` m above the lid's top
    edge) -> grasp (palm down on the top edge, fingers curled over it: palm and fingers in
    contact, DexArt's contact rule) and hold. A lid that falls back below `pass_by` - 0.3 rad
    sends the hand back to reach.
    """

    DEFAULTS = dict(
        tip=0.165,  # control point: this far ahead of the palm centre along the fingers ...
        back=0.03,  # ... and this far above the palm surface (top of the straight fingers)
        pitch=1.0,  # rad: fingers pitched down from level (keeps the wrist off the pedestal)
        r=0.12,  # m from the hinge: where the fingertips push the lid's underside
        under=0.012,  # fingertips this far under the lid while sliding in
        edge_in=0.04,  # ... reaching at most this far short of its front edge
        approach=0.03,  # start the slide this far in front of the lid's front edge
        hover=0.1,
        lead=0.25,  # rad: the pushing point leads the lid by at most this
        press=0.01,  # m into the lid's underside while lifting
        pass_by=0.15,  # rad past vertical: the lid falls onto its open stop
        edge_dx=0.035,  # palm centre this far in front of the top edge (toward the robot) ...
        edge_dz=-0.015,  # ... and this far above it (pressing down on it)
        close=1.6,
        push=0.01,  # m: the grasp presses the top edge this far toward the open stop
        hold_past=0.0,  # rad: the grasp holds the top edge where it is this far past the open stop
        thumb=(0.3, 0.0, 0.0),  # thumb joints 13-15 while grasping
        vmax=0.3,
        vmax_close=0.15,
        tol_reach=0.02,
        tol_descend=0.015,
        ik_reach=True,  # joint-space reach to the scoop's start (a palm twist there can drag link5 over the pedestal)
        ik_phases=(),  # phases that move in joint space toward an IK solution of their goal
        over_back=0.12,  # m: in front of the top edge before going over it
        align=0.0,  # finger direction: 0 radial from the robot base, 1 along the lid (toward its hinge)
    )

    def reset(self, env, seed: int) -> None:
        super().reset(env, seed)
        self.phase = "reach"

    def _geom(self, env):
        obj = env.obj
        u = _mat(obj.base.entity_pose)[:3, 0].copy()
        u[2] = 0.0
        u /= np.linalg.norm(u)  # level, toward the hinge
        hinge = obj.joint.get_global_pose().p.astype(np.float64)
        return u, hinge

    @staticmethod
    def _lid_point(u, hinge, r, th, off):
        """A point `r` m from the hinge on the lid at angle th, `off` m out of its underside."""
        z = np.array([0.0, 0.0, 1.0])
        along = -np.cos(th) * u + np.sin(th) * z
        n = -np.sin(th) * u - np.cos(th) * z  # the underside's outward normal
        return hinge + r * along + off * n

    def _lid_len(self, env) -> float:
        return float(-env.obj.grip_local.p[0]) + 0.01

    def act(self, env) -> np.ndarray:
        p = self.p
        palm = _mat(env.palm_pose())
        pos = palm[:3, 3]
        u, hinge = self._geom(env)
        z = np.array([0.0, 0.0, 1.0])
        radial = np.r_[hinge[:2] - np.asarray(env.robot.root.entity_pose.p[:2], np.float64), 0.0]
        fh = (1 - p["align"]) * radial / np.linalg.norm(radial) + p["align"] * u
        fh /= np.linalg.norm(fh)  # level finger direction: away from the robot, not along a yawed lid
        c, sn = np.cos(p["pitch"]), np.sin(p["pitch"])
        fing = c * fh - sn * z  # fingers forward, pitched down
        up = sn * fh + c * z  # the back of the hand
        r_down = _palm_rotation(-up, fing)
        ctrl = p["tip"] * fing + p["back"] * up  # control point relative to the palm centre
        angle = env.obj.joint_angle()
        d = self._lid_len(env)
        r = min(p["r"], d - p["edge_in"])
        vert = np.pi / 2
        goal, r_des, hand, q_reach = pos, r_down, 0.0, None
        open_at = min(vert + p["pass_by"], env.obj.q_goal - 0.02)  # past vertical, or at the open stop
        if self.phase in ("over", "grasp") and angle < open_at - 0.3:
            self.phase = "reach"  # the lid fell back: scoop again
        if self.phase in ("reach", "descend", "insert"):
            inside = self._lid_point(u, hinge, r, angle, p["under"] + 0.01)
            pre = inside - fh * (d - r + p["approach"]) / float(fh @ u)
            if self.phase == "reach":
                goal, q_reach = self._reachable_hover(env, pre - ctrl, r_down)
                if np.linalg.norm(goal - pos) < p["tol_reach"] and np.linalg.norm(_rotvec(r_down @ palm[:3, :3].T)) < 0.15:
                    self.phase = "descend"
            if self.phase == "descend":
                goal = pre - ctrl
                if np.linalg.norm(goal - pos) < p["tol_descend"]:
                    self.phase, self.close_angle = "insert", angle
            if self.phase == "insert":
                goal = inside - ctrl
                if np.linalg.norm(goal - pos) < 0.015 or angle - self.close_angle > 0.05:
                    self.phase = "lift"
        if self.phase == "lift":
            phi = min(angle + p["lead"], vert + p["pass_by"] + 0.1)
            goal = self._lid_point(u, hinge, r, phi, -p["press"]) - ctrl
            if angle > open_at:
                self.phase = "over"
        if self.phase in ("over", "grasp"):
            hold = max(angle, env.obj.q_goal + p["hold_past"])  # where the edge is on the open stop
            edge = self._lid_point(u, hinge, d, hold, -float(env.obj.params.get("lid_thick", 0.01)))
            top = self._lid_point(u, hinge, d, hold, 0.0)  # the front edge's inner corner
            edge = edge if edge[2] > top[2] else top
            at = edge - fh * p["edge_dx"] + z * p["edge_dz"]
            r_des = _palm_rotation(-z, fh)  # flat, palm down
            if self.phase == "over":  # up in front of the lid, then over its top edge
                goal = at - fh * p["over_back"] + z * p["hover"]
                if np.linalg.norm(goal - pos) < p["tol_reach"] and np.linalg.norm(_rotvec(r_des @ palm[:3, :3].T)) < 0.15:
                    self.phase = "grasp"
            if self.phase == "grasp":  # press toward the open stop: curled fingers must not pull it shut
                goal = at + u * p["push"]
                hand = p["close"] if np.linalg.norm(goal - pos) < 0.03 else 0.0
        q_goal = None
        if self.phase == "reach" and p["ik_reach"]:
            q_goal = q_reach  # solved (or found out of reach) by _reachable_hover: no second IK
        elif self.phase in p["ik_phases"]:
            q_goal = self._ik(env, goal, r_des)
        vmax = p["vmax_close"] if self.phase in ("insert", "lift", "grasp") else p["vmax"]
        return self._command(env, palm, goal, r_des, hand, vmax, q_goal)

    def _reachable_hover(self, env, below: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The highest of `hover`, 0.7, 0.5, 0.3 and 0 times it above `below` (the scoop's start)
        that the arm's IK reaches, with its joint solution (None: twist toward the full hover).
        Near the robot's base (the toilet's front edge) a full hover is out of the xArm's reach:
        the IK fails there, and the twist fallback used to drive the wrist onto a twisted branch
        it never left."""
        z = np.array([0.0, 0.0, 1.0])
        full = below + z * self.p["hover"]
        if self.p["ik_reach"]:
            for frac in (1.0, 0.7, 0.5, 0.3, 0.0):
                goal = below + z * self.p["hover"] * frac
                q = self._ik(env, goal, rot)
                if q is not None:
                    return goal, q
        return full, None

    def _hand(self, env, amount: float) -> np.ndarray:
        """amount 0: straight fingers (scooping), > 0: curled over the top edge."""
        q = np.zeros(R.HAND_DOF)
        for f in range(3):
            q[4 * f + 1] = amount
            q[4 * f + 2] = amount
            q[4 * f + 3] = 0.8 * amount
        q[12] = 1.3  # thumb tucked under the palm
        q[13] = 0.3
        if self.phase == "grasp":
            q[13], q[14], q[15] = self.p["thumb"]
        lim = env.joint_limits()[R.ARM_DOF :]
        return np.clip(q, lim[:, 0], lim[:, 1])


class DexArtLaptopExpert(_LidExpert):
    __doc__ = _LidExpert.__doc__
    name = "dexart_laptop"


class DexArtToiletExpert(_LidExpert):
    __doc__ = _LidExpert.__doc__
    name = "dexart_toilet"
    # the lid is barely ajar over the bowl: lift it at its front edge, which overhangs the bowl
    # the scoop starts 6 cm in front of it: near the xArm's base the hover is lowered, and the
    # fingers must still clear the lid's top on the way down
    DEFAULTS = dict(_LidExpert.DEFAULTS, r=0.5, edge_in=0.015, vmax_close=0.25, approach=0.06)


EXPERTS = {
    "dexart_bucket": DexArtBucketExpert,
    "dexart_faucet": DexArtFaucetExpert,
    "dexart_laptop": DexArtLaptopExpert,
    "dexart_toilet": DexArtToiletExpert,
}
