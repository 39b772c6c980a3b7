"""Adroit (door, hammer, pen, relocate) on MuJoCo, behind the `ManipulationEnv` contract.

The gymnasium-robotics env is used only to build the model and for its seeded
reset (object / goal randomisation). Stepping, control and rendering drive
MuJoCo directly: actions are joint-position targets, turned into `ctrl` so that
each actuated joint holds its target against gravity.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from kubm.errors import ConfigError
from kubm.sim.base import CameraSpec, Observation, SimulatorError

# MuJoCo picks its GL backend when it is first imported; EGL works headless with Mesa.
os.environ.setdefault("MUJOCO_GL", "egl")

_GL_HELP = (
    "install the GL libraries (`apt-get install -y libegl1 libgl1`, or `libosmesa6` "
    "for MUJOCO_GL=osmesa) or set MUJOCO_GL=egl"
)

try:
    import mujoco
except Exception as e:  # a missing GL library surfaces as an arbitrary import error
    raise SimulatorError(
        f"MuJoCo failed to import with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({e!r}); {_GL_HELP}"
    ) from e

TASKS = ("door", "hammer", "pen", "relocate")
GYM_IDS = {t: f"AdroitHand{t.capitalize()}-v1" for t in TASKS}
DEFAULT_HORIZON = {"door": 200, "hammer": 200, "pen": 100, "relocate": 200}

# Default free cameras (used when CameraSpec has neither name nor position):
# chosen so that hand and object are both in view at 128x128 over the whole episode.
DEFAULT_CAMERAS: dict[str, dict] = {
    "door": dict(position=(0.6, -0.75, 0.75), lookat=(-0.1, 0.05, 0.25), fovy_deg=50.0),
    "hammer": dict(position=(0.55, -0.65, 0.6), lookat=(0.0, -0.1, 0.15), fovy_deg=45.0),
    "pen": dict(position=(0.3, -0.65, 0.55), lookat=(0.0, -0.2, 0.25), fovy_deg=40.0),
    "relocate": dict(position=(0.65, -0.1, 0.65), lookat=(0.0, 0.02, 0.15), fovy_deg=55.0),
}

# Bodies whose pixels form the manipulated object's mask.
OBJECT_BODIES = {
    "door": ["door", "latch"],  # door panel and its handle/latch (the frame is static)
    "hammer": ["Object"],
    "pen": ["Object"],
    "relocate": ["Object"],
}

# Layout of object_state(): (name, width) in order.
OBJECT_STATE_LAYOUT: dict[str, list[tuple[str, int]]] = {
    "door": [("hinge_angle", 1), ("latch_angle", 1), ("handle_pos", 3)],
    "hammer": [("hammer_pos", 3), ("hammer_quat", 4), ("nail_pos", 3), ("nail_goal_pos", 3)],
    "pen": [("pen_pos", 3), ("pen_dir", 3), ("goal_pos", 3), ("goal_dir", 3)],
    "relocate": [("ball_pos", 3), ("target_pos", 3)],
}

# Parts a perturbation may move mid-episode (kubm.evaluation.perturbation): name ->
# (MuJoCo object kind, its name). The gymnasium-robotics reset re-randomises both, so a move
# never outlives its episode.
MOVABLE_PARTS: dict[str, dict[str, tuple[str, str]]] = {
    "door": {"door": ("body", "frame")},  # the frame carries the door, its hinge and the handle
    "relocate": {"target": ("site", "target")},
    "hammer": {},
    "pen": {},
}


def _gym_env(task: str):
    import gymnasium as gym
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    return gym.make(GYM_IDS[task]).unwrapped  # no wrappers: we never call its step()


class AdroitEnv:
    """One Adroit task as a `ManipulationEnv`.

    Beyond the protocol, experts may use `model`/`data` (the live MuJoCo state)
    and `qpos_adr`/`dof_adr` (qpos / dof address of each action's joint).
    """

    suite = "adroit"

    def __init__(
        self,
        task: str,
        *,
        camera: CameraSpec | None = None,
        horizon: int | None = None,
        render: bool = True,
        frame_skip: int = 5,
    ):
        if task not in TASKS:
            raise ConfigError(f"unknown adroit task {task!r}; allowed: {', '.join(TASKS)}")
        self.task = task
        self.horizon = int(horizon or DEFAULT_HORIZON[task])
        self.frame_skip = int(frame_skip)
        self.render_enabled = render
        self.render_rgb = True  # False skips the RGB pass (obs.rgb None): sim perception reads only depth and seg
        self._gym = _gym_env(task)
        m = self.model = self._gym.model
        self.data = self._gym.data
        if m.nbody >= 256:
            raise SimulatorError(f"{m.nbody} bodies do not fit the uint8 segmentation")
        self.fps = 1.0 / (m.opt.timestep * self.frame_skip)

        # Actuator i drives joint jnt[i]; actions and qpos follow actuator order.
        jnt = m.actuator_trnid[:, 0]
        self.action_dim = int(m.nu)
        self.joint_names = [m.joint(j).name for j in jnt]
        self.qpos_adr = m.jnt_qposadr[jnt]
        self.dof_adr = m.jnt_dofadr[jnt]
        self._limits = m.jnt_range[jnt].copy()
        self._gain = m.actuator_gainprm[:, 0].copy()
        self._b0 = m.actuator_biasprm[:, 0].copy()
        self._b1 = m.actuator_biasprm[:, 1].copy()
        self._gear = m.actuator_gear[:, 0].copy()
        self._ctrlrange = m.actuator_ctrlrange.copy()
        self.object_seg_ids = [m.body(b).id for b in OBJECT_BODIES[task]]
        self.object_state_layout = list(OBJECT_STATE_LAYOUT[task])
        self._t = 0

        self.camera = self._resolve_camera(camera or CameraSpec())
        if render:
            self._init_renderer()

    # ------------------------------------------------------------------ camera
    def _resolve_camera(self, cam: CameraSpec) -> CameraSpec:
        m = self.model
        if cam.name is not None:
            cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam.name)
            if cid < 0:
                names = [m.camera(i).name for i in range(m.ncam)]
                raise ConfigError(f"camera {cam.name!r} not in the {self.task} scene; allowed: {names}")
            self._cam_id = cid
            return replace(cam, position=None, lookat=None, fovy_deg=float(m.cam_fovy[cid]))
        self._cam_id = -1
        if cam.position is None:
            cam = replace(cam, **DEFAULT_CAMERAS[self.task])
        elif cam.lookat is None:
            raise ValueError("CameraSpec.position needs a lookat point")
        pos, look = np.asarray(cam.position, float), np.asarray(cam.lookat, float)
        f = look - pos
        dist = float(np.linalg.norm(f))
        f /= dist
        if abs(f[2]) > 0.999:
            raise ValueError("a free camera cannot look straight up or down (its roll is undefined)")
        # MuJoCo free camera: pos = lookat - distance * (cos el cos az, cos el sin az, sin el)
        self._free = mujoco.MjvCamera()
        self._free.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._free.lookat[:] = look
        self._free.distance = dist
        self._free.azimuth = float(np.degrees(np.arctan2(f[1], f[0])))
        self._free.elevation = float(np.degrees(np.arcsin(f[2])))
        m.vis.global_.fovy = cam.fovy_deg  # free cameras take their fovy from here
        return cam

    def camera_intrinsics(self) -> np.ndarray:
        """Pinhole K in pixels; pixel centres at integer coordinates."""
        w, h = self.camera.width, self.camera.height
        fy = 0.5 * h / np.tan(np.radians(self.camera.fovy_deg) / 2)
        return np.array([[fy, 0, (w - 1) / 2], [0, fy, (h - 1) / 2], [0, 0, 1]])

    def camera_extrinsics(self) -> np.ndarray:
        """World -> camera (OpenCV: x right, y down, z forward) as a 4x4 matrix."""
        if self._cam_id >= 0:
            pos = self.data.cam_xpos[self._cam_id]
            # MuJoCo camera frame: x right, y up, looks along -z; flip y and z for OpenCV.
            r_wc = self.data.cam_xmat[self._cam_id].reshape(3, 3) * np.array([1, -1, -1])
        else:
            pos = np.asarray(self.camera.position, float)
            z = np.asarray(self.camera.lookat, float) - pos
            z /= np.linalg.norm(z)
            x = np.cross(z, [0.0, 0.0, 1.0])
            x /= np.linalg.norm(x)
            r_wc = np.stack([x, np.cross(z, x), z], axis=1)
        ext = np.eye(4)
        ext[:3, :3] = r_wc.T
        ext[:3, 3] = -r_wc.T @ pos
        return ext

    # --------------------------------------------------------------- rendering
    def _init_renderer(self):
        m = self.model
        m.vis.quality.offsamples = 0  # no MSAA: 10-20x faster on llvmpipe
        h, w = self.camera.height, self.camera.width
        if w > m.vis.global_.offwidth or h > m.vis.global_.offheight:
            raise ConfigError(f"{w}x{h} exceeds the offscreen buffer {m.vis.global_.offwidth}x{m.vis.global_.offheight}")
        try:
            self._gl = mujoco.GLContext(w, h)
            self._gl.make_current()
            self._ctx = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as e:
            raise SimulatorError(
                f"MuJoCo renderer failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({e!r}); {_GL_HELP}"
            ) from e
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(m, maxgeom=10000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._rect = mujoco.MjrRect(0, 0, w, h)
        self._opt_rgb = mujoco.MjvOption()
        # Depth and segmentation hide sites: the translucent relocate target would
        # otherwise cover the ball exactly when the task succeeds.
        self._opt_seg = mujoco.MjvOption()
        self._opt_seg.sitegroup[:] = 0
        self._mjcam = mujoco.MjvCamera()
        if self._cam_id >= 0:
            self._mjcam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self._mjcam.fixedcamid = self._cam_id
        else:
            self._mjcam = self._free
        self._pert = mujoco.MjvPerturb()
        # Reverse-z depth buffer -> metres (as mujoco.Renderer does).
        near = m.vis.map.znear * m.stat.extent
        far = m.vis.map.zfar * m.stat.extent
        self._zc = 0.5 * (far + near) / (far - near) - 0.5
        self._zd = far * near / (far - near)
        self._geom_body = np.append(m.geom_bodyid, 0).astype(np.uint8)  # index -1 -> 0
        h, w = self.camera.height, self.camera.width
        self._rgb_buf = np.empty((h, w, 3), np.uint8)
        self._depth_buf = np.empty((h, w), np.float32)
        self._seg_buf = np.empty((h, w, 3), np.uint8)

    def _update_scene(self, opt):
        mujoco.mjv_updateScene(
            self.model, self.data, opt, self._pert, self._mjcam, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )

    def _render(self) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        self._gl.make_current()
        scn, flags = self._scene, self._scene.flags
        # Pass 1: RGB, as seen (translucent goal markers included).
        if self.render_rgb:
            self._update_scene(self._opt_rgb)
            mujoco.mjr_render(self._rect, scn, self._ctx)
            mujoco.mjr_readPixels(self._rgb_buf, None, self._rect, self._ctx)
        # Pass 2: flat colours encode scene-geom index + 1 (0 = nothing). Depth is
        # read here too: every geom is opaque in this pass (the pen's translucent
        # body writes no depth in pass 1), so depth and segmentation agree.
        self._update_scene(self._opt_seg)
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = True
        mujoco.mjr_render(self._rect, scn, self._ctx)
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = False
        mujoco.mjr_readPixels(self._seg_buf, self._depth_buf, self._rect, self._ctx)
        depth = (self._zd / (self._depth_buf.astype(np.float64) + self._zc)).astype(np.float32)
        c = self._seg_buf.astype(np.int32)
        segid = c[..., 0] + (c[..., 1] << 8) + (c[..., 2] << 16)
        # scene geom -> model geom id (-1 for non-geoms) -> body id
        lut = np.full(scn.ngeom + 1, -1, np.int64)
        for i in range(scn.ngeom):
            g = scn.geoms[i]
            if g.objtype == mujoco.mjtObj.mjOBJ_GEOM and g.segid >= 0:
                lut[g.segid + 1] = g.objid
        seg = self._geom_body[lut[np.minimum(segid, scn.ngeom)]]
        # OpenGL rows start at the bottom.
        rgb = np.flipud(self._rgb_buf).copy() if self.render_rgb else None
        return rgb, np.flipud(depth).copy(), np.flipud(seg).copy()

    # ---------------------------------------------------------------- episode
    def _obs(self) -> Observation:
        qpos = self.data.qpos[self.qpos_adr].astype(np.float32)
        obs = Observation(qpos=qpos, info={"t": self._t})
        if self.render_enabled:
            obs.rgb, obs.depth, obs.seg = self._render()
        return obs

    def reset(self, seed: int) -> Observation:
        self._gym.reset(seed=int(seed))  # seeded object / goal randomisation
        mujoco.mj_forward(self.model, self.data)
        self._t = 0
        if self.task == "pen":
            self._pen_len = [
                np.linalg.norm(self._site("object_top") - self._site("object_bottom")),
                np.linalg.norm(self._site("target_top") - self._site("target_bottom")),
            ]
        return self._obs()

    def qpos_to_ctrl(self, q_des: np.ndarray) -> np.ndarray:
        """ctrl such that each actuator's force balances gravity/Coriolis at q_des:
        gain*ctrl + b0 + b1*q_des = qfrc_bias  (the servo then pulls q toward q_des)."""
        bias = self.data.qfrc_bias[self.dof_adr] / self._gear
        ctrl = (bias - self._b0 - self._b1 * q_des) / self._gain
        return np.clip(ctrl, self._ctrlrange[:, 0], self._ctrlrange[:, 1])

    def step(self, action: np.ndarray) -> Observation:
        q_des = np.asarray(action, dtype=np.float64).reshape(self.action_dim)
        q_des = np.clip(q_des, self._limits[:, 0], self._limits[:, 1])
        m, d = self.model, self.data
        for _ in range(self.frame_skip):  # re-cancel gravity at every substep
            d.ctrl[:] = self.qpos_to_ctrl(q_des)
            mujoco.mj_step(m, d)
        # mj_step leaves positions/sites at the pre-step state; make them match qpos.
        mujoco.mj_forward(m, d)
        self._t += 1
        return self._obs()

    # --------------------------------------------------------- privileged state
    def _site(self, name: str) -> np.ndarray:
        return self.data.site(name).xpos.copy()

    def _body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def _jnt(self, name: str) -> float:
        return float(self.data.joint(name).qpos[0])

    def _pen_dirs(self) -> tuple[np.ndarray, np.ndarray]:
        obj = (self._site("object_top") - self._site("object_bottom")) / self._pen_len[0]
        goal = (self._site("target_top") - self._site("target_bottom")) / self._pen_len[1]
        return obj, goal

    def object_poses(self) -> np.ndarray:
        """World pose (x, y, z, qw, qx, qy, qz) of each body in object_seg_ids, float32 (B, 7).

        Ground truth for the sim point tracker: object points ride on these bodies.
        """
        ids = self.object_seg_ids
        return np.concatenate([self.data.xpos[ids], self.data.xquat[ids]], axis=1).astype(np.float32)

    def object_state(self) -> np.ndarray:
        t = self.task
        if t == "relocate":
            parts = [self._body_pos("Object"), self._site("target")]
        elif t == "door":
            parts = [[self._jnt("door_hinge")], [self._jnt("latch")], self._site("S_handle")]
        elif t == "hammer":
            parts = [
                self._body_pos("Object"),
                self.data.body("Object").xquat,
                self._site("S_target"),
                self._site("nail_goal"),
            ]
        else:  # pen
            obj_dir, goal_dir = self._pen_dirs()
            parts = [self._body_pos("Object"), obj_dir, self._site("eps_ball"), goal_dir]
        return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)

    def success(self) -> bool:
        """The success criteria (docs/design.md, "Benchmarks"), evaluated on the current MuJoCo state."""
        t = self.task
        if t == "door":
            return self._jnt("door_hinge") >= 1.35
        if t == "hammer":
            return bool(np.linalg.norm(self._site("S_target") - self._site("nail_goal")) < 0.01)
        if t == "relocate":
            return bool(np.linalg.norm(self._body_pos("Object") - self._site("target")) < 0.1)
        obj_dir, goal_dir = self._pen_dirs()
        close = np.linalg.norm(self._body_pos("Object") - self._site("eps_ball")) < 0.075
        return bool(close and float(obj_dir @ goal_dir) > 0.95)

    def joint_limits(self) -> np.ndarray:
        return self._limits.copy()

    # ------------------------------------------------------------- perturbation
    def movable_parts(self) -> list[str]:
        return list(MOVABLE_PARTS[self.task])

    def part_position(self, name: str) -> np.ndarray:
        """A movable part's position in its parent frame (what the reset randomises)."""
        kind, ref = self._part(name)
        if kind == "body":
            return self.model.body_pos[self.model.body(ref).id].copy()
        return self.model.site_pos[self.model.site(ref).id].copy()

    def _part(self, name: str) -> tuple[str, str]:
        parts = MOVABLE_PARTS[self.task]
        if name not in parts:
            raise ConfigError(f"perturbation.move {name!r} is not a movable part of adroit/{self.task}; "
                              f"allowed: {sorted(parts) or 'none'}")
        return parts[name]

    def move_part(self, name: str, offset: np.ndarray) -> None:
        """Displace a movable part by ``offset`` (m, world frame) now, mid-episode; the next
        observation shows it moved."""
        kind, ref = self._part(name)
        offset = np.asarray(offset, float).reshape(3)
        if kind == "body":
            self.model.body_pos[self.model.body(ref).id] += offset
        else:
            self.model.site_pos[self.model.site(ref).id] += offset
        mujoco.mj_forward(self.model, self.data)

    def close(self) -> None:
        if self.render_enabled and self._ctx is not None:
            self._ctx.free()
            self._gl.free()
            self._ctx = None
        self._gym.close()
