"""DexArt tasks (bucket, ...) on SAPIEN 3, behind the `ManipulationEnv` contract.

A port of DexArt's task definitions (Bao et al., CVPR 2023) to SAPIEN 3.0.3:

- robot: xArm6 + 16-DoF Allegro right hand (22 DoF, see `robot.py`) on a locked
  pedestal at (-0.5, 0, 0) with its base at z = 0.3, as in DexArt;
- drives: arm (stiffness 2e5, damping 4e4, force limit 500), fingers (200, 60, 10),
  with gravity compensation (passive forces) on every substep;
- timing: 0.004 s x 10 substeps = 25 Hz control; horizon 250;
- action: 22 joint-position targets (arm then hand, `JOINT_NAMES` order), clipped to
  the joint limits. (DexArt's own action is an end-effector twist for the arm; K-UBM's
  action is the joint-position target, which is what an expert's twist turns into.)
- objects: procedural, seeded instances (`objects.py`); the table top is z = 0.

Rendering uses SAPIEN's `minimal` shader pack (one raster pass gives colour, camera-
space position and per-actor ids), which is what makes CPU (lavapipe) rendering fast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kubm.errors import ConfigError, SimError
from kubm.sim.base import CameraSpec, Observation, SimulatorError
from kubm.sim.dexart import robot as R
from kubm.sim.dexart import tasks as T

try:
    import sapien
except Exception as e:  # pragma: no cover - import failure is an install problem
    raise SimulatorError(f"SAPIEN failed to import ({e!r}); pip install sapien==3.0.3") from e

RENDER_FIX = (
    "SAPIEN needs a Vulkan device: on a CPU-only Debian 12 machine run `make setup` "
    "(installs libvulkan1 and Mesa >= 25 lavapipe `mesa-vulkan-drivers` from bookworm-backports; "
    "bookworm's own Mesa 22 is rejected), check with `kubm doctor`, or pass render=False for physics only"
)

TIMESTEP = 0.004
FRAME_SKIP = 10
DEFAULT_HORIZON = 250

ROBOT_BASE = (-0.5, 0.0, 0.3)  # DexArt: robot on a locked box at (-0.5, 0, 0.15), half size (0.1, 0.2, 0.15)
PEDESTAL_CENTER = (-0.5, 0.0, 0.15)
PEDESTAL_HALF = (0.1, 0.2, 0.15)

_RENDER_CONFIGURED = False


def _configure_renderer() -> None:
    """Select the fast single-pass shader pack (process-wide SAPIEN setting)."""
    global _RENDER_CONFIGURED
    if _RENDER_CONFIGURED:
        return
    sapien.render.set_camera_shader_dir("minimal")
    sapien.render.set_picture_format("Color", "r8g8b8a8unorm")
    sapien.render.set_picture_format("ColorRaw", "r8g8b8a8unorm")
    sapien.render.set_picture_format("PositionSegmentation", "r16g16b16a16sint")
    _RENDER_CONFIGURED = True


def _look_at_rotation(position, lookat) -> np.ndarray:
    """SAPIEN camera-entity rotation: columns (forward, left, up)."""
    f = np.asarray(lookat, float) - np.asarray(position, float)
    f /= np.linalg.norm(f)
    if abs(f[2]) > 0.999:
        raise ValueError("a free camera cannot look straight up or down (its roll is undefined)")
    left = np.cross([0.0, 0.0, 1.0], f)
    left /= np.linalg.norm(left)
    up = np.cross(f, left)
    return np.stack([f, left, up], axis=1)


def _pose_from_matrix(rot: np.ndarray, pos) -> "sapien.Pose":
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = pos
    return sapien.Pose(m)


class DexArtEnv:
    """One DexArt task as a `ManipulationEnv`.

    `assets_dir` loads DexArt's PartNet-Mobility instances from its asset
    download instead of the procedural objects (`assets.py`); `instances` picks 'seen'
    (train), 'unseen' (test), 'all' or a list of ids.

    Beyond the protocol, experts may use `robot` (the SAPIEN articulation), `obj`
    (`objects.ArticulatedObject`: base/part links, joint, grip pose, progress),
    `palm_pose()`, `qpos_full()` and `scene`.
    """

    suite = "dexart"

    def __init__(
        self,
        task: str,
        *,
        camera: CameraSpec | None = None,
        horizon: int | None = None,
        render: bool = True,
        assets_dir: str | None = None,
        instances=None,
        frame_skip: int = FRAME_SKIP,
        visual_max_triangles: int | None = None,
    ):
        if task not in T.TASKS:
            raise ConfigError(f"unknown dexart task {task!r}; allowed: {', '.join(T.TASKS)}")
        self._assets = None
        if assets_dir is not None:
            from kubm.sim.dexart import assets as A

            if task not in A.ASSET_TASKS:
                raise SimError(
                    f"dexart assets_dir (PartNet-Mobility objects) supports {', '.join(A.ASSET_TASKS)} only, not {task!r}"
                )
            self._assets = A.PartNetAssets(task, assets_dir, instances)  # names any missing file
        elif instances is not None:
            raise ConfigError("instances selects PartNet-Mobility objects and needs assets_dir")
        self.task = task
        self.spec = T.SPECS[task]
        self.horizon = int(horizon or DEFAULT_HORIZON)
        self.frame_skip = int(frame_skip)
        self.fps = 1.0 / (TIMESTEP * self.frame_skip)
        self.render_enabled = bool(render)
        self.render_rgb = True  # False skips reading the colour image (obs.rgb None)
        self.action_dim = R.ARM_DOF + R.HAND_DOF
        self.joint_names = list(R.JOINT_NAMES)
        self.camera = self._resolve_camera(camera or CameraSpec())
        # Rendering cost is the robot's triangles; above the cap a visual mesh is decimated (visual_lod).
        self._urdf = R.write_combined_urdf(visual=self.render_enabled, max_triangles=visual_max_triangles)
        if self.render_enabled:
            _configure_renderer()
        self.scene = None
        self.obj = None
        self._pin = None  # pinocchio model of the robot, built on first use
        self._t = 0
        self._seed = None
        # Compact segmentation ids: 0 = background (table/ground, sky), then robot
        # links, pedestal, object links. Fixed across resets.
        self._build_scene()
        self._scene_used = False
        self.seg_names = ["background"] + [l.name for l in self._robot_links] + ["pedestal"] + T.OBJECT_LINKS[task]
        if len(self.seg_names) > 255:
            raise SimulatorError(f"{len(self.seg_names)} segmentation ids do not fit uint8")
        self.object_seg_ids = [self.seg_names.index(n) for n in T.OBJECT_LINKS[task]]
        self.object_state_layout = list(T.OBJECT_STATE_LAYOUT[task])
        self.reset(0)

    # ------------------------------------------------------------------ camera
    def _resolve_camera(self, cam: CameraSpec) -> CameraSpec:
        if cam.name is not None:
            if cam.name != "default":
                raise ConfigError(f"camera {cam.name!r} not in the dexart {self.task} scene; allowed: ['default']")
            cam = replace(cam, name=None, position=None, lookat=None)
        if cam.position is None:
            cam = replace(cam, **T.DEFAULT_CAMERAS[self.task])
        elif cam.lookat is None:
            raise ValueError("CameraSpec.position needs a lookat point")
        self._cam_rot = _look_at_rotation(cam.position, cam.lookat)
        return cam

    def camera_intrinsics(self) -> np.ndarray:
        """Pinhole K in pixels; pixel centres at integer coordinates."""
        w, h = self.camera.width, self.camera.height
        fy = 0.5 * h / np.tan(np.radians(self.camera.fovy_deg) / 2)
        return np.array([[fy, 0, (w - 1) / 2], [0, fy, (h - 1) / 2], [0, 0, 1]])

    def camera_extrinsics(self) -> np.ndarray:
        """World -> camera (OpenCV: x right, y down, z forward) as a 4x4 matrix."""
        f, left, up = self._cam_rot.T
        r_wc = np.stack([-left, -up, f], axis=1)  # camera axes in world coordinates
        pos = np.asarray(self.camera.position, float)
        ext = np.eye(4)
        ext[:3, :3] = r_wc.T
        ext[:3, 3] = -r_wc.T @ pos
        return ext

    # ------------------------------------------------------------------- scene
    def _build_scene(self) -> None:
        self.obj = None
        self.scene = None  # release the previous scene (and its PhysX state) first
        self._cam = None
        sapien.physx.set_scene_config(enable_enhanced_determinism=True, cpu_workers=0)
        systems = [sapien.physx.PhysxCpuSystem()]
        if self.render_enabled:
            try:
                systems.append(sapien.render.RenderSystem())
            except RuntimeError as e:
                raise SimulatorError(f"SAPIEN found no Vulkan render device ({e}); {RENDER_FIX}") from e
        scene = sapien.Scene(systems)
        scene.timestep = TIMESTEP
        vis = self.render_enabled
        ground_mat = sapien.render.RenderMaterial(base_color=[0.78, 0.74, 0.68, 1.0]) if vis else None
        self._ground = scene.add_ground(0.0, render=vis, render_material=ground_mat, render_half_size=[2, 2])
        pb = scene.create_actor_builder()
        pb.add_box_collision(sapien.Pose(), PEDESTAL_HALF)
        if vis:
            pb.add_box_visual(sapien.Pose(), PEDESTAL_HALF, material=[0.2, 0.2, 0.2])
        pb.set_initial_pose(sapien.Pose(PEDESTAL_CENTER))
        self._pedestal = pb.build_static(name="pedestal")

        loader = scene.create_urdf_loader()
        loader.set_material(1.5, 1.0, 0.01)  # DexArt's robot material and contact patches
        loader.set_patch_radius(0.04)
        loader.set_min_patch_radius(0.02)
        try:
            builder = loader.load_file_as_articulation_builder(str(self._urdf))
            for lb in builder.link_builders:  # DexArt: robot self-collision off
                lb.collision_groups = [1, 1, 17, 0]
            robot = builder.build(fix_root_link=True)
        except RuntimeError as e:
            if "render" in str(e).lower():
                raise SimulatorError(f"SAPIEN could not build the robot's render shapes ({e}); {RENDER_FIX}") from e
            raise
        robot.name = "xarm6_allegro"
        robot.set_root_pose(sapien.Pose(ROBOT_BASE))
        by_name = {j.name: j for j in robot.active_joints}
        self._joints = [by_name[n] for n in R.JOINT_NAMES]
        active = [j.name for j in robot.active_joints]
        self._perm = np.array([active.index(n) for n in R.JOINT_NAMES])  # sapien order -> action order
        for i, j in enumerate(self._joints):
            stiffness, damping, force = R.ARM_DRIVE if i < R.ARM_DOF else R.FINGER_DRIVE
            j.set_drive_properties(stiffness, damping, force, "force")
        lim = np.array([j.limit[0] for j in self._joints], float)
        self._limits = lim
        self._robot_links = [l for l in robot.links if l.name not in ("palm", "wrist", "palm_center")]
        # Contact bookkeeping (DexArt: finger links + palm against the manipulated part).
        self._contact_index = {}
        for k, finger in enumerate(("thumb", "index", "middle", "ring")):
            for name in R.FINGER_LINKS[finger]:
                self._contact_index[robot.find_link_by_name(name).entity.per_scene_id] = k
        for name in R.PALM_LINKS:
            self._contact_index[robot.find_link_by_name(name).entity.per_scene_id] = 4
        self._palm = robot.find_link_by_name("palm_center")
        self.robot = robot

        if vis:
            scene.set_ambient_light([0.45, 0.45, 0.45])
            scene.add_directional_light([0.3, 0.4, -1.0], [0.7, 0.7, 0.7], shadow=False)
            scene.add_directional_light([-0.5, -0.2, -0.6], [0.25, 0.25, 0.25], shadow=False)
            self._cam = scene.add_camera(
                "default",
                self.camera.width,
                self.camera.height,
                np.radians(self.camera.fovy_deg),
                0.02,
                10.0,
            )
            self._cam.entity.set_pose(_pose_from_matrix(self._cam_rot, self.camera.position))
        self.scene = scene

    def _seg_lut(self) -> np.ndarray:
        ids = [(0, self._ground.per_scene_id)]
        ids += [(i + 1, l.entity.per_scene_id) for i, l in enumerate(self._robot_links)]
        ids.append((self.seg_names.index("pedestal"), self._pedestal.per_scene_id))
        base_id, part_id = self.object_seg_ids
        part = self.obj.part.entity.per_scene_id
        for link in self.obj.articulation.links:  # every non-part link counts as the base
            sid = link.entity.per_scene_id
            ids.append((part_id if sid == part else base_id, sid))
        lut = np.zeros(max(s for _, s in ids) + 1, np.uint8)
        for compact, sid in ids:
            lut[sid] = compact
        return lut

    # --------------------------------------------------------------- episode
    def initial_qpos(self) -> np.ndarray:
        q = np.zeros(self.action_dim)
        q[: R.ARM_DOF] = R.ARM_INIT_QPOS
        return np.clip(q, self._limits[:, 0], self._limits[:, 1])

    def reset(self, seed: int) -> Observation:
        self._seed = int(seed)
        rng = np.random.default_rng(self._seed)
        # A fresh scene on every reset: PhysX keeps history in a scene (contact and
        # friction caches, solver warm starts, sleep state, articulation caches, actor
        # order), so reusing one makes seed B's rollout depend on the episodes before it.
        # collect screens seeds physics-only and replays them rendered, and needs the
        # same actions both times. (The constructor's scene is used once, unstepped.)
        if self._scene_used:
            self._build_scene()
        self._scene_used = True
        if self._assets is not None:
            self.obj = self._assets.build(self.scene, rng, visual=self.render_enabled)
        else:
            self.obj = T.build_object(self.task, self.scene, rng, visual=self.render_enabled)
        q0 = self.initial_qpos()
        full = np.zeros(self.action_dim, np.float32)
        full[self._perm] = q0
        self.robot.set_root_pose(sapien.Pose(ROBOT_BASE))
        self.robot.set_qpos(full)
        self.robot.set_qvel(np.zeros(self.action_dim, np.float32))
        self.robot.set_qf(np.zeros(self.action_dim, np.float32))
        self._set_targets(q0)
        self._t = 0
        self.obj.init_base_pose = self.obj.base.entity_pose
        if self.render_enabled:
            self._lut = self._seg_lut()
        return self._obs()

    def _set_targets(self, q: np.ndarray) -> None:
        for j, t in zip(self._joints, q):
            j.set_drive_target(float(t))

    def step(self, action: np.ndarray) -> Observation:
        q_des = np.asarray(action, dtype=np.float64).reshape(self.action_dim)
        q_des = np.clip(q_des, self._limits[:, 0], self._limits[:, 1])
        self._set_targets(q_des)
        for _ in range(self.frame_skip):
            self.robot.set_qf(self.robot.compute_passive_force(True, False))  # gravity compensation
            self.scene.step()
        self._t += 1
        return self._obs()

    def qpos_full(self) -> np.ndarray:
        """Robot joint positions in action order (float64)."""
        return np.asarray(self.robot.get_qpos(), np.float64)[self._perm]

    def _obs(self) -> Observation:
        obs = Observation(qpos=self.qpos_full().astype(np.float32), info={"t": self._t})
        if self.render_enabled:
            obs.rgb, obs.depth, obs.seg = self.render()
        return obs

    # -------------------------------------------------------------- rendering
    def render(self) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) (None while ``render_rgb`` is False), depth float32 metres along the optical axis (H, W),
        seg uint8 compact ids (H, W); pixels that hit nothing get depth = far (10 m)."""
        if not self.render_enabled:
            raise SimulatorError("this env was built with render=False")
        self.scene.update_render()
        self._cam.take_picture()
        rgb = np.ascontiguousarray(self._cam.get_picture("Color")[..., :3]) if self.render_rgb else None
        ps = self._cam.get_picture("PositionSegmentation")
        z = ps[..., 2].astype(np.float32)
        depth = np.where(z < 0, -z * 1e-3, np.float32(self._cam.far)).astype(np.float32)
        sid = ps[..., 3].astype(np.int64)
        lut = self._lut
        seg = np.where(sid < len(lut), lut[np.minimum(sid, len(lut) - 1)], 0).astype(np.uint8)
        if rgb is not None and rgb.dtype != np.uint8:  # float formats (other shader packs)
            rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        return rgb, depth, seg

    # --------------------------------------------------------- privileged state
    def palm_pose(self) -> "sapien.Pose":
        return self._palm.entity_pose

    def contact_flags(self) -> np.ndarray:
        """(5,) bool: thumb, index, middle, ring, palm touching the manipulated part
        (summed contact impulse over the last substep above `tasks.IMPULSE_THRESHOLD`)."""
        impulse = np.zeros(5)
        if self._t == 0:  # PhysX's contact list still describes the previous episode
            return impulse > 0
        part = self.obj.part.entity.per_scene_id
        for c in self.scene.get_contacts():
            e0, e1 = c.bodies[0].entity, c.bodies[1].entity
            if e0 is None or e1 is None:
                continue
            a, b = e0.per_scene_id, e1.per_scene_id
            other = b if a == part else a if b == part else None
            k = self._contact_index.get(other)
            if k is not None:
                impulse[k] += sum(float(np.linalg.norm(pt.impulse)) for pt in c.points)
        return impulse > T.IMPULSE_THRESHOLD

    # ------------------------------------------------------------- kinematics
    def palm_jacobian(self, q: np.ndarray | None = None) -> np.ndarray:
        """(6, 22) world-frame Jacobian of the palm-centre origin: rows (v, w), columns in
        action order. `q` (action order) defaults to the current joint positions."""
        if self._pin is None:
            self._pin = self.robot.create_pinocchio_model()
        q = self.qpos_full() if q is None else np.asarray(q, np.float64)
        full = np.zeros(self.action_dim)
        full[self._perm] = q
        j_local = self._pin.compute_single_link_local_jacobian(full, self._palm.index)
        self._pin.compute_forward_kinematics(full)
        rot = self._pin.get_link_pose(self._palm.index).to_transformation_matrix()[:3, :3]
        rot = self.robot.root.entity_pose.to_transformation_matrix()[:3, :3] @ rot  # root -> world
        j = np.zeros((6, self.action_dim))
        j[:3] = rot @ j_local[:3]
        j[3:] = rot @ j_local[3:]
        return j[:, self._perm]

    def arm_targets_for_twist(self, twist: np.ndarray, q: np.ndarray | None = None, damping: float = 0.01) -> np.ndarray:
        """Arm joint targets that move the palm centre by `twist` (world v, w; m/s, rad/s)
        over one control step: damped least squares on the arm columns of the palm
        Jacobian (DexArt's end-effector action, turned into K-UBM's joint targets).

        `q` (action order) is where to start from. DexArt's arm drives (2e5, 4e4) have a
        0.2 s time constant, so the arm lags its targets: to track a velocity, pass the
        previous step's targets, not the measured joint positions (the default)."""
        q = self.qpos_full() if q is None else np.asarray(q, np.float64)
        j = self.palm_jacobian(q)[:, : R.ARM_DOF]
        dx = np.asarray(twist, np.float64) / self.fps
        dq = j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(6), dx)
        return np.clip(q[: R.ARM_DOF] + dq, self._limits[: R.ARM_DOF, 0], self._limits[: R.ARM_DOF, 1])

    def object_poses(self) -> np.ndarray:
        """World pose (x, y, z, qw, qx, qy, qz) of each body in object_seg_ids, float32 (B, 7)."""
        rows = []
        for name in T.OBJECT_LINKS[self.task]:
            p = self.obj.link(name).entity_pose
            rows.append(np.concatenate([p.p, p.q]))
        return np.asarray(rows, np.float32)

    def object_state(self) -> np.ndarray:
        return T.object_state(self).astype(np.float32)

    def success(self) -> bool:
        return bool(T.success(self))

    def joint_limits(self) -> np.ndarray:
        return self._limits.copy()

    def movable_parts(self) -> list[str]:
        return []  # no DexArt perturbation is defined yet

    def part_position(self, name: str) -> np.ndarray:
        raise self._no_part(name)

    def move_part(self, name: str, offset: np.ndarray) -> None:
        raise self._no_part(name)

    def _no_part(self, name: str) -> ConfigError:
        return ConfigError(f"perturbation.move {name!r}: dexart/{self.task} has no movable parts; "
                          "perturbations are defined for adroit door and relocate")

    def close(self) -> None:
        if self.scene is not None:
            self.obj = None
            self._cam = None
            self.robot = None
            self.scene = None
