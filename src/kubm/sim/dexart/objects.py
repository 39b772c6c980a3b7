"""Procedural articulated objects standing in for DexArt's PartNet-Mobility instances.

Each object is one SAPIEN articulation: a `base` link and one moving `part` link on a
revolute joint (bucket handle, faucet handle, laptop lid, toilet lid). Its shape,
size, mass and placement are drawn from a seeded RNG, in the spirit of DexArt's
instance variation: different seeds give different instances.

Conventions (object frame): origin at the centre of the object's footprint on the
table (z = 0 is the table top), +x points away from the robot, z up. A revolute
joint turns about the x axis of its joint frame (SAPIEN convention); `q_start` is the
joint value at reset (DexArt's 'left' annotation) and `q_goal` the fully open / raised
value (DexArt's 'middle').
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sapien

# Quaternions (w, x, y, z).
Q_ID = (1.0, 0.0, 0.0, 0.0)
_S = float(np.sqrt(0.5))
Q_X_TO_Y = (_S, 0.0, 0.0, _S)  # +90 deg about z: a capsule/cylinder/joint x axis -> y
Q_X_TO_Z = (_S, 0.0, -_S, 0.0)  # -90 deg about y: x axis -> z


def quat_about(axis, angle: float) -> tuple[float, float, float, float]:
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    s = np.sin(angle / 2)
    return (float(np.cos(angle / 2)), *(float(v) for v in a * s))


def quat_mul(a, b) -> tuple[float, float, float, float]:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return (
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    )


@dataclass
class ArticulatedObject:
    """A built object: the articulation plus what tasks and experts need to know."""

    name: str
    articulation: object  # sapien.physx.PhysxArticulation
    base: object  # base link (PhysxArticulationLinkComponent)
    part: object  # the manipulated part's link
    joint: object  # the part's revolute joint
    q_start: float  # joint value at reset ('left')
    q_goal: float  # fully raised / open ('middle')
    grip_local: sapien.Pose  # grip point (handle bar centre, lid edge) in the part's link frame
    root_pose: sapien.Pose  # world pose of the object frame at reset
    params: dict = field(default_factory=dict)
    init_base_pose: sapien.Pose | None = None  # base pose at reset (set by the env)
    link_names: dict = field(default_factory=dict)  # task link name -> articulation link name
    joint_index: int = 0  # the part's index in the articulation's qpos

    def link(self, name: str):
        name = self.link_names.get(name, name)
        for link in self.articulation.links:
            if link.name == name:
                return link
        raise KeyError(f"{self.name} has no link {name!r}")

    def joint_angle(self) -> float:
        return float(self.articulation.get_qpos()[self.joint_index])

    def progress(self) -> float:
        """DexArt's progress: 1 - |q - middle| / |left - middle| (1 = fully raised/open)."""
        return 1.0 - abs(self.joint_angle() - self.q_goal) / abs(self.q_start - self.q_goal)

    def grip_pose(self) -> sapien.Pose:
        return self.part.entity_pose * self.grip_local


class _Shapes:
    """Add a primitive as collision and (when rendering) visual in one call."""

    def __init__(self, builder, material, density: float, color, visual: bool):
        self.b, self.mat, self.density, self.visual = builder, material, density, visual
        self.color = sapien.render.RenderMaterial(base_color=[*color, 1.0]) if visual else None

    def box(self, p, half, q=Q_ID):
        pose = sapien.Pose(p, q)
        self.b.add_box_collision(pose, half, material=self.mat, density=self.density)
        if self.visual:
            self.b.add_box_visual(pose, half, material=self.color)

    def capsule(self, p, radius, half_len, q=Q_ID):
        pose = sapien.Pose(p, q)
        self.b.add_capsule_collision(pose, radius, half_len, material=self.mat, density=self.density)
        if self.visual:
            self.b.add_capsule_visual(pose, radius, half_len, material=self.color)

    def cylinder(self, p, radius, half_len, q=Q_ID):
        pose = sapien.Pose(p, q)
        self.b.add_cylinder_collision(pose, radius, half_len, material=self.mat, density=self.density)
        if self.visual:
            self.b.add_cylinder_visual(pose, radius, half_len, material=self.color)


def _hsv(h, s, v):
    import colorsys

    return colorsys.hsv_to_rgb(h % 1.0, s, v)


# ---------------------------------------------------------------------- bucket


def bucket_params(rng: np.random.Generator) -> dict:
    """One bucket instance. Sizes in metres, angles in radians."""
    r_bot = rng.uniform(0.075, 0.10)
    r_top = r_bot + rng.uniform(0.0, 0.03)
    height = rng.uniform(0.13, 0.20)
    return dict(
        n_sides=int(rng.integers(8, 15)),
        r_bot=r_bot,
        r_top=r_top,
        height=height,
        wall=rng.uniform(0.005, 0.008),
        base_mass=rng.uniform(0.5, 1.0),
        # handle: arm length from the pivot to the bar, bar radius (DexArt uses thick handles)
        handle_len=r_top + rng.uniform(0.04, 0.08),
        handle_radius=rng.uniform(0.008, 0.012),
        handle_down=rng.uniform(1.15, 1.45),  # 'left': lowered toward the robot
        **_placement(rng, 0.05, 0.1),
        body_color=_hsv(rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.9)),
        handle_color=_hsv(rng.uniform(0.0, 0.12), rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.95)),
    )


def build_bucket(scene, p: dict, *, visual: bool, center=(0.1, 0.0)) -> ArticulatedObject:
    """A free-standing polygonal bucket with a bail handle on a revolute joint.

    The handle pivots about the bucket's y axis at the rim; its bar is parallel to y.
    Joint angle 0 = upright (DexArt 'middle'); negative = lowered toward -x (the robot).
    """
    n, rb, rt, h, t = p["n_sides"], p["r_bot"], p["r_top"], p["height"], p["wall"]
    mat = scene.create_physical_material(1.0, 1.0, 0.1)  # DexArt: friction 1, restitution 0.1
    ab = scene.create_articulation_builder()

    body = ab.create_link_builder()
    body.set_name("bucket_body")
    bottom_t = 0.012
    side_h = h - bottom_t
    alpha = np.arctan2(rt - rb, side_h)  # outward tilt of the walls
    r_mid = 0.5 * (rb + rt)
    side_w = 2 * (r_mid + t) * np.tan(np.pi / n) + 0.004  # slight overlap at the corners
    half_wall = (t / 2, side_w / 2, side_h / (2 * np.cos(alpha)))
    vol = n * 8 * np.prod(half_wall) + np.pi * rb**2 * bottom_t
    shapes = _Shapes(body, mat, p["base_mass"] / vol, p["body_color"], visual)
    shapes.cylinder((0, 0, bottom_t / 2), rb + t, bottom_t / 2, Q_X_TO_Z)
    for i in range(n):
        phi = 2 * np.pi * i / n
        c = (r_mid + t / 2) * np.array([np.cos(phi), np.sin(phi)])
        q = quat_mul(quat_about((0, 0, 1), phi), quat_about((0, 1, 0), alpha))
        shapes.box((c[0], c[1], bottom_t + side_h / 2), half_wall, q)

    # Handle: link frame at the pivot centre, aligned with the bucket frame at q = 0.
    pivot_z = h - 0.015
    w = rt / np.cos(np.pi / n) + t + 0.005  # half distance between the pivots (outside the rim)
    L, rh = p["handle_len"], p["handle_radius"]
    handle = ab.create_link_builder(body)
    handle.set_name("bucket_handle")
    handle.set_joint_name("handle_joint")
    q_down = -p["handle_down"]
    handle.set_joint_properties(
        "revolute_unwrapped",
        [[q_down, -q_down]],  # symmetric: the bail can fall to either side
        sapien.Pose((0, 0, pivot_z), Q_X_TO_Y),  # joint x axis = bucket y
        sapien.Pose((0, 0, 0), Q_X_TO_Y),
        0.0,  # DexArt: handle joint friction 0
        0.0,
    )
    hs = _Shapes(handle, mat, 400.0, p["handle_color"], visual)
    for s in (-1, 1):
        hs.box((0, s * w, L / 2), (0.006, 0.004, L / 2 + 0.006))
    hs.capsule((0, 0, L), rh, w, Q_X_TO_Y)

    art = ab.build()
    art.name = "bucket"
    base, part = art.links[0], art.links[1]
    joint = art.active_joints[0]
    root = sapien.Pose(
        (center[0] + p["pos"][0], center[1] + p["pos"][1], 0.0), quat_about((0, 0, 1), p["yaw"])
    )
    art.set_root_pose(root)
    art.set_qpos(np.array([q_down], np.float32))
    art.set_qvel(np.zeros(1, np.float32))
    art.set_root_linear_velocity([0, 0, 0])
    art.set_root_angular_velocity([0, 0, 0])
    return ArticulatedObject(
        name="bucket",
        articulation=art,
        base=base,
        part=part,
        joint=joint,
        q_start=q_down,
        q_goal=0.0,
        grip_local=sapien.Pose((0, 0, L)),
        root_pose=root,
        params=dict(p),
    )


def _finish(ab, name, root, *, fix_root, q_start, q_goal, grip_local, params) -> ArticulatedObject:
    ab.set_initial_pose(root)
    art = ab.build(fix_root_link=fix_root)
    art.name = name
    art.set_root_pose(root)
    art.set_qpos(np.array([q_start], np.float32))
    art.set_qvel(np.zeros(1, np.float32))
    return ArticulatedObject(
        name=name,
        articulation=art,
        base=art.links[0],
        part=art.links[1],
        joint=art.active_joints[0],
        q_start=q_start,
        q_goal=q_goal,
        grip_local=grip_local,
        root_pose=root,
        params=dict(params),
    )


def _placement(rng: np.random.Generator, r: float = 0.05, yaw_range: float = 0.1, rx: float | None = None) -> dict:
    """DexArt: annotated position + rand(3) * rand_pos (bucket 0.05, faucet/laptop 0.1, toilet 0.2)
    and a random yaw (laptop 60 deg, faucet 90, toilet 45); here x in [0, rx] (rx defaults to r),
    y in [-r/2, r/2] and a smaller yaw, so that scripted experts keep working."""
    rx = r if rx is None else rx
    return dict(pos=(rng.uniform(0.0, rx), rng.uniform(-r / 2, r / 2)), yaw=rng.uniform(-yaw_range, yaw_range))


def _root(p: dict, center, z: float = 0.0) -> sapien.Pose:
    return sapien.Pose((center[0] + p["pos"][0], center[1] + p["pos"][1], z), quat_about((0, 0, 1), p["yaw"]))


# ---------------------------------------------------------------------- faucet


def faucet_params(rng: np.random.Generator) -> dict:
    return dict(
        col_radius=rng.uniform(0.022, 0.035),
        col_height=rng.uniform(0.16, 0.26),
        spout_len=rng.uniform(0.08, 0.14),
        lever_len=rng.uniform(0.08, 0.13),
        lever_radius=rng.uniform(0.009, 0.013),
        hub_radius=rng.uniform(0.025, 0.035),
        joint_damping=rng.uniform(0.05, 0.2),
        body_color=_hsv(0.0, 0.0, rng.uniform(0.55, 0.85)),
        handle_color=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.9)),
        **_placement(rng, 0.1, 0.3),
    )


def build_faucet(scene, p: dict, *, visual: bool, center=(0.05, 0.0)) -> ArticulatedObject:
    """A fixed faucet column with a spout toward the robot and a lever handle on top.

    The handle turns about the vertical axis; 0 = lever pointing at the robot (-x),
    positive = counter-clockwise seen from above. DexArt success: angle > 1.5 rad.
    """
    mat = scene.create_physical_material(1.0, 1.0, 0.1)
    ab = scene.create_articulation_builder()
    body = ab.create_link_builder()
    body.set_name("faucet_base")
    rc, hc = p["col_radius"], p["col_height"]
    bs = _Shapes(body, mat, 2000.0, p["body_color"], visual)
    bs.box((0, 0, 0.01), (0.07, 0.07, 0.01))
    bs.cylinder((0, 0, hc / 2), rc, hc / 2, Q_X_TO_Z)
    sl = p["spout_len"]
    bs.box((-sl / 2, 0, 0.7 * hc), (sl / 2, 0.015, 0.012))
    bs.box((-sl + 0.01, 0, 0.7 * hc - 0.025), (0.012, 0.012, 0.025))

    handle = ab.create_link_builder(body)
    handle.set_name("faucet_handle")
    handle.set_joint_name("handle_joint")
    handle.set_joint_properties(
        "revolute_unwrapped",
        [[-0.05, 1.8]],
        sapien.Pose((0, 0, hc), Q_X_TO_Z),  # joint x axis = world z
        sapien.Pose((0, 0, 0), Q_X_TO_Z),
        0.0,
        p["joint_damping"],
    )
    hs = _Shapes(handle, mat, 800.0, p["handle_color"], visual)
    hs.cylinder((0, 0, 0.015), p["hub_radius"], 0.015, Q_X_TO_Z)
    ll, lr = p["lever_len"], p["lever_radius"]
    hs.capsule((-ll / 2 - 0.01, 0, 0.035), lr, ll / 2)  # capsule along x: the lever
    return _finish(
        ab,
        "faucet",
        _root(p, center),
        fix_root=True,
        q_start=0.0,
        q_goal=1.5,
        grip_local=sapien.Pose((-0.7 * ll - 0.01, 0, 0.035)),
        params=p,
    )


# ---------------------------------------------------------------------- laptop


def laptop_params(rng: np.random.Generator) -> dict:
    return dict(
        depth=rng.uniform(0.19, 0.25),
        width=rng.uniform(0.27, 0.35),
        base_thick=rng.uniform(0.015, 0.025),
        lid_thick=rng.uniform(0.007, 0.012),
        lid_open=rng.uniform(1.75, 2.05),  # 'middle': fully open
        lid_start=rng.uniform(0.3, 0.5),  # resting ajar on its stop: fingers fit under the front edge
        joint_damping=rng.uniform(0.02, 0.1),
        body_color=_hsv(rng.uniform(0.55, 0.65), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.6)),
        lid_color=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.2, 0.5), rng.uniform(0.55, 0.85)),
        # x spread 6 cm: the open lid (hinge at x <= 0.115 m) stays where a palm pressing it reaches
        **_placement(rng, 0.1, 0.3, rx=0.05),
    )


def build_laptop(scene, p: dict, *, visual: bool, center=(0.0, 0.0)) -> ArticulatedObject:
    """A laptop: fixed base on the table, lid hinged at its back edge (+x).

    0 would be closed on the base; positive lifts the front edge. The lid rests ajar on a
    stop at `lid_start` (its lower limit), so that fingers fit under the front edge
    (DexArt success: progress > 0.95 plus contact).
    """
    mat = scene.create_physical_material(1.0, 1.0, 0.1)
    ab = scene.create_articulation_builder()
    d, w, bt, lt = p["depth"], p["width"], p["base_thick"], p["lid_thick"]
    body = ab.create_link_builder()
    body.set_name("laptop_base")
    _Shapes(body, mat, 1000.0, p["body_color"], visual).box((0, 0, bt / 2), (d / 2, w / 2, bt / 2))
    lid = ab.create_link_builder(body)
    lid.set_name("laptop_lid")
    lid.set_joint_name("lid_joint")
    lid.set_joint_properties(
        "revolute_unwrapped",
        [[p["lid_start"], p["lid_open"]]],  # the lower limit is the stop the lid rests on
        sapien.Pose((d / 2, 0, bt), Q_X_TO_Y),  # hinge along the back edge (y)
        sapien.Pose((0, 0, 0), Q_X_TO_Y),
        0.0,
        p["joint_damping"],
    )
    _Shapes(lid, mat, 600.0, p["lid_color"], visual).box((-d / 2, 0, lt / 2 + 0.001), (d / 2, w / 2, lt / 2))
    return _finish(
        ab,
        "laptop",
        _root(p, center),
        fix_root=True,
        q_start=p["lid_start"],
        q_goal=p["lid_open"],
        grip_local=sapien.Pose((-d + 0.01, 0, lt + 0.001)),  # middle of the lid's front edge
        params=p,
    )


# ---------------------------------------------------------------------- toilet


def toilet_params(rng: np.random.Generator) -> dict:
    return dict(
        bowl_depth=rng.uniform(0.26, 0.32),
        bowl_width=rng.uniform(0.22, 0.28),
        bowl_height=rng.uniform(0.20, 0.26),
        tank_depth=rng.uniform(0.08, 0.12),
        tank_height=rng.uniform(0.14, 0.20),
        lid_thick=rng.uniform(0.015, 0.025),
        lid_open=rng.uniform(1.65, 1.85),  # past vertical, leaning back toward the tank: the open lid rests on its stop
        lid_start=rng.uniform(0.08, 0.2),  # resting ajar on its stop (lower limit)
        joint_damping=rng.uniform(0.05, 0.2),
        body_color=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.08), rng.uniform(0.8, 0.95)),
        lid_color=_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.9)),
        # x spread 6 cm: the open lid (hinge at x <= 0.165 m) stays where a palm pressing it reaches
        **_placement(rng, 0.1, 0.25, rx=0.06),
    )


def build_toilet(scene, p: dict, *, visual: bool, center=(-0.02, 0.0)) -> ArticulatedObject:
    """A toilet: fixed bowl block with a tank at the back (+x) and a lid hinged in front of it.

    0 would be closed on the bowl; positive opens it toward the tank. The lid rests
    slightly ajar on a stop at `lid_start` (its lower limit) and overhangs the bowl's front
    by 3 cm. Progress = (q - lid_start) / (lid_open - lid_start) (DexArt success: > 0.95,
    palm within 0.1 m, >= 2 fingers).
    """
    mat = scene.create_physical_material(1.0, 1.0, 0.1)
    ab = scene.create_articulation_builder()
    bd, bw, bh = p["bowl_depth"], p["bowl_width"], p["bowl_height"]
    td, th, lt = p["tank_depth"], p["tank_height"], p["lid_thick"]
    body = ab.create_link_builder()
    body.set_name("toilet_base")
    bs = _Shapes(body, mat, 500.0, p["body_color"], visual)
    bs.box((0, 0, bh / 2), (bd / 2, bw / 2, bh / 2))  # bowl
    bs.box((bd / 2 + td / 2 - 0.02, 0, (bh + th) / 2), (td / 2, bw / 2 + 0.02, (bh + th) / 2))  # tank
    lid = ab.create_link_builder(body)
    lid.set_name("toilet_lid")
    lid.set_joint_name("lid_joint")
    hinge_x = bd / 2 - 0.02 - 0.015
    lid.set_joint_properties(
        "revolute_unwrapped",
        [[p["lid_start"], p["lid_open"]]],
        sapien.Pose((hinge_x, 0, bh), Q_X_TO_Y),
        sapien.Pose((0, 0, 0), Q_X_TO_Y),
        0.0,
        p["joint_damping"],
    )
    ld = hinge_x + bd / 2 + 0.03  # lid overhangs the bowl's front by 3 cm
    _Shapes(lid, mat, 500.0, p["lid_color"], visual).box((-ld / 2, 0, lt / 2 + 0.001), (ld / 2, bw / 2 - 0.01, lt / 2))
    return _finish(
        ab,
        "toilet",
        _root(p, center),
        fix_root=True,
        q_start=p["lid_start"],
        q_goal=p["lid_open"],
        grip_local=sapien.Pose((-ld + 0.01, 0, lt + 0.001)),
        params=p,
    )


BUILDERS = {
    "bucket": (bucket_params, build_bucket),
    "faucet": (faucet_params, build_faucet),
    "laptop": (laptop_params, build_laptop),
    "toilet": (toilet_params, build_toilet),
}
