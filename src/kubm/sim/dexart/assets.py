"""DexArt's own PartNet-Mobility objects, from its official asset download (optional).

With `assets_dir` pointing at the unpacked DexArt `assets/` folder, the bucket task
loads the real instances instead of the procedural stand-ins, as DexArt does:

    <assets_dir>/sapien/<id>_thick_handle/mobility.urdf      (+ its meshes)
    <assets_dir>/sapien/<id>_thick_handle/mobility_v2.json   (joint list; the handle is
                                                             the 'hinge' named 'handle')
    <assets_dir>/annotation/bucket_scale.json                {"<id>": scale}
    <assets_dir>/annotation/bucket_joint_annotation.json     {"<id>": {"left": q, "middle": q,
                                                              optional "min"/"max"}}

Loading follows DexArt's `BucketEnv.load_instance`: URDF scaled, free root, convex
decompositions from the files, densities 100 (handle `link_0`) / 7800 (base `link_1`),
friction 1, restitution 0.1, handle joint friction 0, handle limits from min/max,
reset at 'left'. The grip point is DexArt's `update_handle_relative_pose` (the highest
handle vertex with the handle at 'middle', centred along y). The bucket is turned by
pi about z (DexArt's yaw) and put on the table at x in [0, 0.05], y in [-0.025, 0.025].

The faucet, laptop and toilet asset layouts are not supported yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import sapien

from kubm.sim.dexart import objects as O

# DexArt `task_setting.TRAIN_CONFIG`: seen (train) and unseen (test) PartNet-Mobility ids.
INSTANCES = {
    "bucket": {
        "seen": [100431, 100435, 100438, 100439, 100441, 100444, 100446, 100448, 100454, 100461, 100462],
        "unseen": [100468, 100470, 100473, 100482, 100484, 100486, 102352, 102358],
    },
    "faucet": {
        "seen": [148, 693, 822, 857, 991, 1011, 1053, 1288, 1343, 1370, 1466],
        "unseen": [1556, 1633, 1646, 1667, 1741, 1832, 1925],
    },
    "laptop": {
        "seen": [11395, 11405, 11406, 11477, 11581, 11586, 9996, 10090, 10098, 10101, 10125],
        "unseen": [9748, 9912, 9918, 9960, 9968, 9992],
    },
    "toilet": {
        "seen": [102677, 102687, 102689, 102692, 102697, 102699, 102701, 102703, 102707, 102708, 103234,
                 102663, 102666, 102667, 102669, 102670, 102675],
        "unseen": [101320, 102621, 102622, 102630, 102634, 102645, 102648, 102651, 102652, 102654, 102658],
    },
}
SUPPORTED = ("bucket",)


def all_instances(task: str) -> list[int]:
    return INSTANCES[task]["seen"] + INSTANCES[task]["unseen"]


def resolve_instances(task: str, instances) -> list[int]:
    """The PartNet ids to draw from: 'seen', 'unseen', 'all' (default) or a list of ids."""
    if instances is None or instances == "all":
        return all_instances(task)
    if isinstance(instances, str):
        if instances not in INSTANCES[task]:
            raise ValueError(f"instances must be 'seen', 'unseen', 'all' or a list of ids, not {instances!r}")
        return list(INSTANCES[task][instances])
    ids = [int(i) for i in instances]
    unknown = [i for i in ids if i not in all_instances(task)]
    if unknown:
        raise ValueError(f"unknown {task} object ids {unknown}; DexArt's {task} ids: {all_instances(task)}")
    if not ids:
        raise ValueError("instances is empty")
    return ids


class BucketAssets:
    """Checks the asset files up front and builds one instance per reset."""

    def __init__(self, assets_dir, instances=None):
        self.root = Path(assets_dir).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"dexart assets_dir {str(self.root)!r} is not a directory")
        self.ids = resolve_instances("bucket", instances)
        ann = self.root / "annotation"
        self.scale = _read_json(ann / "bucket_scale.json")
        self.joints = _read_json(ann / "bucket_joint_annotation.json")
        for i in self.ids:
            d = self.instance_dir(i)
            for f in (d / "mobility.urdf", d / "mobility_v2.json"):
                if not f.is_file():
                    raise FileNotFoundError(f"dexart assets: missing {f}")
            for name, table in (("bucket_scale.json", self.scale), ("bucket_joint_annotation.json", self.joints)):
                if str(i) not in table:
                    raise FileNotFoundError(f"dexart assets: {ann / name} has no entry for object id {i}")
            if not {"left", "middle"} <= set(self.joints[str(i)]):
                raise ValueError(f"{ann / 'bucket_joint_annotation.json'}: id {i} needs 'left' and 'middle'")

    def instance_dir(self, i: int) -> Path:
        return self.root / "sapien" / f"{i}_thick_handle"

    def build(self, scene, rng: np.random.Generator, *, visual: bool) -> O.ArticulatedObject:
        i = int(self.ids[rng.integers(len(self.ids))])
        pos = (rng.uniform(0.0, 0.05), rng.uniform(-0.025, 0.025))
        d = self.instance_dir(i)
        loader = scene.create_urdf_loader()
        loader.fix_root_link = False
        loader.load_multiple_collisions_from_file = True
        loader.scale = float(self.scale[str(i)])
        loader.set_material(1.0, 1.0, 0.1)
        loader.set_link_density("link_0", 100.0)
        loader.set_link_density("link_1", 7800.0)
        urdf = d / "mobility.urdf"
        if not visual:  # the 3.0.3 loader builds render shapes, which need a render device
            urdf = _without_visuals(urdf)
        art = loader.load(str(urdf))
        art.name = f"bucket_{i}"
        hinge = _handle_joint_index(d / "mobility_v2.json", art.dof)
        joint = art.active_joints[hinge]
        for j in art.active_joints:
            j.set_friction(0.0)
        ann = self.joints[str(i)]
        if "min" in ann and "max" in ann:
            lo, hi = sorted((float(ann["min"]), float(ann["max"])))
            joint.set_limits(np.array([[lo, hi]], np.float32))
        left, middle = float(ann["left"]), float(ann["middle"])
        q = np.zeros(art.dof, np.float32)
        q[hinge] = middle
        root = sapien.Pose((0, 0, 0), O.quat_about((0, 0, 1), np.pi))
        art.set_root_pose(root)
        art.set_qpos(q)
        part = joint.child_link
        base = next((l for l in art.links if l.name == "link_1"), art.links[0])
        grip_local = _grip_local(part)
        # Stand on the table: lowest collision point at z = 0.
        z_min = min(l.compute_global_aabb_tight()[0, 2] for l in art.links if l.collision_shapes)
        root = sapien.Pose((pos[0], pos[1], -float(z_min)), root.q)
        art.set_root_pose(root)
        q[hinge] = left
        art.set_qpos(q)
        art.set_qvel(np.zeros(art.dof, np.float32))
        obj = O.ArticulatedObject(
            name="bucket",
            articulation=art,
            base=base,
            part=part,
            joint=joint,
            q_start=left,
            q_goal=middle,
            grip_local=grip_local,
            root_pose=root,
            params={"instance": i, "scale": float(self.scale[str(i)]), "pos": pos},
        )
        obj.joint_index = hinge
        obj.link_names = {"bucket_body": base.name, "bucket_handle": part.name}
        return obj


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"dexart assets: missing {path}")
    with open(path) as f:
        return json.load(f)


def _handle_joint_index(mobility_v2: Path, dof: int) -> int:
    """DexArt: count 'free' entries as DoFs; the handle is the 'hinge' named 'handle'."""
    entries = _read_json(mobility_v2)
    n, index = 0, None
    for e in entries:
        if e.get("joint") == "free":
            n += 1
        if e.get("joint") == "hinge" and e.get("name") == "handle":
            index = n - 1
    if index is None or index < 0 or index >= dof:
        raise ValueError(f"{mobility_v2}: no usable 'hinge' entry named 'handle' (dof {dof})")
    return index


def _grip_local(part) -> sapien.Pose:
    """DexArt's handle point: x, z of the highest collision vertex, y the mean (world frame),
    stored relative to the handle link."""
    pts = []
    link_pose = part.entity_pose
    for shape in part.collision_shapes:
        verts = getattr(shape, "vertices", None)
        if verts is None:
            continue
        local = shape.local_pose.to_transformation_matrix()
        world = link_pose.to_transformation_matrix() @ local
        v = np.asarray(verts) * np.asarray(shape.scale)
        pts.append(v @ world[:3, :3].T + world[:3, 3])
    if not pts:  # primitive shapes: use the AABB top centre
        lo, hi = part.compute_global_aabb_tight()
        top = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    else:
        p = np.concatenate(pts)
        k = int(np.argmax(p[:, 2]))
        top = np.array([p[k, 0], p[:, 1].mean(), p[k, 2]])
    return link_pose.inv() * sapien.Pose(top)


def _without_visuals(urdf: Path) -> Path:
    """A copy of `urdf` without <visual> elements, mesh paths made absolute, in a cache dir
    (the assets folder may be read-only)."""
    import hashlib
    import os
    import tempfile
    import xml.etree.ElementTree as ET

    tree = ET.parse(urdf)
    for link in tree.getroot().findall("link"):
        for v in link.findall("visual"):
            link.remove(v)
    for mesh in tree.getroot().iter("mesh"):
        fn = mesh.get("filename", "")
        if fn.startswith("package://"):
            fn = fn[len("package://") :]
        if not os.path.isabs(fn):
            mesh.set("filename", str((urdf.parent / fn).resolve()))
    text = ET.tostring(tree.getroot(), encoding="unicode")
    d = Path(tempfile.gettempdir()) / f"kubm-dexart-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True)
    out = d / f"{urdf.parent.name}_novisual_{hashlib.sha1(text.encode()).hexdigest()[:12]}.urdf"
    if not out.is_file():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return out
