"""The DexArt robot rebuilt from installed wheels: pybullet's xArm6 + mani-skill's Allegro right hand.

DexArt's own `xarm6_allegro_wrist_mounted_rotate.urdf` is part of its asset download
and is not available offline. This module writes an equivalent combined URDF:

- the arm is `pybullet_data/xarm/xarm6_robot.urdf` (DexArt's xArm6) with its
  `<transmission>`/`<gazebo>` elements dropped and `package://` mesh paths made absolute;
- the hand is `mani_skill/assets/robots/allegro/allegro_hand_right.urdf` (link names
  match DexArt's: `base_link`, `link_0.0` ... `link_15.0`, `link_*_tip`);
- a fixed joint `link6` -> `base_link` (`MOUNT_XYZ`/`MOUNT_RPY`) joins them, and a
  `palm_center` frame (DexArt's palm link name) is added on the palm surface.

Neither package is imported: only their asset files are read (located with
`importlib.util.find_spec`, which does not execute the package).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from kubm.sim.base import SimulatorError

ARM_JOINTS = [f"joint{i}" for i in range(1, 7)]
HAND_JOINTS = [f"joint_{i}.0" for i in range(16)]
JOINT_NAMES = ARM_JOINTS + HAND_JOINTS  # action / qpos order (22)
ARM_DOF, HAND_DOF = 6, 16

# DexArt `allegro_hand_xarm6_wrist_mounted_face_front`: initial arm qpos.
ARM_INIT_QPOS = np.array([0.0, 0.0, 0.0, np.pi, np.pi / 2, np.pi])

# Drives (stiffness, damping, force limit) as in DexArt's `load_robot`.
ARM_DRIVE = (2e5, 4e4, 500.0)
FINGER_DRIVE = (200.0, 60.0, 10.0)

# Hand mounted on the xArm flange (link6 frame). With ARM_INIT_QPOS the flange z axis
# points along world +x; the hand's fingers (+z of `base_link`) continue along the flange
# axis and its palm normal (+x of `base_link`) points down (world -z): "face front".
# The Allegro palm reaches 9.5 cm below `base_link`; 1 cm more stands in for DexArt's
# wrist adapter. The pi turn about the flange axis makes the palm face down.
MOUNT_XYZ = (0.0, 0.0, 0.105)
MOUNT_RPY = (0.0, 0.0, np.pi)

# Palm-centre frame relative to the Allegro `base_link`: on the palm surface (+x side),
# halfway between the finger bases (z = 0) and the heel of the palm (z ~ -0.095).
PALM_CENTER_XYZ = (0.015, 0.0, -0.045)

# Links used for contact checks (DexArt: finger links + palm).
FINGERTIP_LINKS = ["link_15.0_tip", "link_3.0_tip", "link_7.0_tip", "link_11.0_tip"]  # thumb, index, middle, ring
FINGER_LINKS = {  # DexArt's `finger_contact_link_name` grouping (`finger_contact_ids`)
    "thumb": ["link_14.0", "link_15.0", "link_15.0_tip"],
    "index": ["link_1.0", "link_2.0", "link_3.0", "link_3.0_tip"],
    "middle": ["link_5.0", "link_6.0", "link_7.0", "link_7.0_tip"],
    "ring": ["link_9.0", "link_10.0", "link_11.0", "link_11.0_tip"],
}
PALM_LINKS = ["base_link"]


def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SimulatorError(f"the DexArt robot needs the `{name}` package's asset files; install it: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def arm_urdf_path() -> Path:
    p = _package_dir("pybullet_data", "pip install pybullet==3.2.7") / "xarm" / "xarm6_robot.urdf"
    if not p.is_file():
        raise SimulatorError(f"missing {p}; reinstall pybullet==3.2.7")
    return p


def hand_urdf_path() -> Path:
    p = (
        _package_dir("mani_skill", "pip install --no-deps mani-skill==3.0.1")
        / "assets"
        / "robots"
        / "allegro"
        / "allegro_hand_right.urdf"
    )
    if not p.is_file():
        raise SimulatorError(f"missing {p}; reinstall mani-skill==3.0.1 (pip install --no-deps)")
    return p


def _abs_mesh_paths(root: ET.Element, base_dir: Path, package_root: Path) -> None:
    for mesh in root.iter("mesh"):
        fn = mesh.get("filename", "")
        if fn.startswith("package://"):
            p = package_root / fn[len("package://") :]
        elif os.path.isabs(fn):
            p = Path(fn)
        else:
            p = base_dir / fn
        if not p.is_file():
            raise SimulatorError(f"robot mesh not found: {p}")
        mesh.set("filename", str(p.resolve()))


def _fmt(v) -> str:
    return " ".join(f"{float(x):.10g}" for x in v)


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / f"kubm-dexart-{os.getuid()}"


def combined_urdf(visual: bool = True, max_triangles: int | None = None,
                  cache_dir: str | os.PathLike | None = None) -> str:
    """The 22-DoF xArm6 + Allegro URDF as a string (mesh paths absolute). With
    `max_triangles`, visual meshes above it point at decimated copies (`visual_lod`)."""
    arm_p, hand_p = arm_urdf_path(), hand_urdf_path()
    arm = ET.parse(arm_p).getroot()
    hand = ET.parse(hand_p).getroot()
    for tag in ("transmission", "gazebo"):
        for el in arm.findall(tag):
            arm.remove(el)
    # xarm6_robot.urdf: package://xarm_description/... lives next to the URDF.
    _abs_mesh_paths(arm, arm_p.parent, arm_p.parent)
    _abs_mesh_paths(hand, hand_p.parent, hand_p.parent)

    robot = ET.Element("robot", name="xarm6_allegro_right")
    # Drop the massless `world` link: `link_base` becomes the (fixed) root.
    for el in arm:
        if el.tag == "link" and el.get("name") == "world":
            continue
        if el.tag == "joint" and el.get("name") == "world_joint":
            continue
        robot.append(el)
    for el in hand:
        robot.append(el)
    mount = ET.SubElement(robot, "joint", name="hand_mount", type="fixed")
    ET.SubElement(mount, "parent", link="link6")
    ET.SubElement(mount, "child", link="base_link")
    ET.SubElement(mount, "origin", xyz=_fmt(MOUNT_XYZ), rpy=_fmt(MOUNT_RPY))
    ET.SubElement(robot, "link", name="palm_center")
    pj = ET.SubElement(robot, "joint", name="palm_center_joint", type="fixed")
    ET.SubElement(pj, "parent", link="base_link")
    ET.SubElement(pj, "child", link="palm_center")
    ET.SubElement(pj, "origin", xyz=_fmt(PALM_CENTER_XYZ), rpy="0 0 0")
    if not visual:  # SAPIEN 3.0.3's loader builds render shapes, which need a render device
        for link in robot.findall("link"):
            for v in link.findall("visual"):
                link.remove(v)
    elif max_triangles is not None:
        from kubm.sim.dexart.visual_lod import decimated

        for v in robot.iter("visual"):
            for mesh in v.iter("mesh"):
                mesh.set("filename", str(decimated(mesh.get("filename"), max_triangles, _cache_dir(cache_dir))))
    for j in robot.findall("joint"):  # PhysX joint friction/damping: DexArt sets none
        for d in j.findall("dynamics"):
            j.remove(d)
    return ET.tostring(robot, encoding="unicode")


def write_combined_urdf(visual: bool = True, cache_dir: str | os.PathLike | None = None,
                        max_triangles: int | None = None) -> Path:
    """Write `combined_urdf()` to a content-addressed file and return its path."""
    text = combined_urdf(visual, max_triangles, cache_dir)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    d = _cache_dir(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"xarm6_allegro_{'vis' if visual else 'novis'}_{digest}.urdf"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic: parallel workers may race here
    return path
