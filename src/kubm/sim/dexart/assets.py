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

`PartNetAssets(task, ...)` generalises this to faucet, laptop and toilet, following
DexArt's `FaucetEnv` / `LaptopEnv` / `ToiletEnv.load_instance`:

    faucet: sapien/<id>/mobility.urdf + mobility_v2.json (the part is the 'hinge' named
            'switch'; 'hinge'/'slider' entries count as DoFs), annotation/faucet_scale.json;
            fixed root, density 7800, joint friction 5, reset at 0 (success: angle > 1.5).
    laptop: sapien/<id>/mobility.urdf + mobility_v2.json (the part is the 'hinge'; 'free'
            entries count as DoFs), annotation/laptop_scale.json (optional, default 1) and
            laptop_joint_annotation.json ('left'/'middle'); fixed root, density 500, joint
            friction 5, reset at left + 0.2; grip = the lid's highest vertex (x, z), mean y.
    toilet: sapien/<id>/mobility.urdf, annotation/toilet_scale.json, toilet_joint_annotation.json
            and toilet_joint.txt (a header line, then "<id> <lid joint> <lid link> <body link>
            [<seat link>]"); fixed root, density 50, joint friction 5, every other joint locked,
            reset at left + 0.25; grip = the lid vertex furthest along +x (x, z), mean y.

The part's link and joint are identified as above; the base is the link named for the
body (toilet) or the part joint's parent link. `env.py` builds these through
`PartNetAssets(task, assets_dir, instances)` for any task in `ASSET_TASKS`.
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
ASSET_TASKS = ("bucket", "faucet", "laptop", "toilet")  # tasks PartNetAssets can load


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
        loader = _urdf_loader(scene, self.scale[str(i)], fix_root=False)
        loader.set_link_density("link_0", 100.0)
        loader.set_link_density("link_1", 7800.0)
        art = _load_urdf(loader, d / "mobility.urdf", visual)
        art.name = f"bucket_{i}"
        hinge = _hinge_index(d / "mobility_v2.json", art.dof, count=("free",), name="handle")
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
        root = sapien.Pose((pos[0], pos[1], _table_height(art)), root.q)
        art.set_root_pose(root)
        q[hinge] = left
        art.set_qpos(q)
        return _at_rest("bucket", art, hinge, base, part, left, middle, grip_local, root,
                        {"instance": i, "scale": float(self.scale[str(i)]), "pos": pos},
                        {"bucket_body": base.name, "bucket_handle": part.name})


class PartNetAssets:
    """DexArt's PartNet-Mobility objects for one task: checks the files up front (naming any
    missing one) and builds one seeded instance per reset."""

    # DexArt: density, joint friction, opening added to 'left' at reset, fixed root
    _LOAD = {
        "faucet": dict(density=7800.0, friction=5.0, init_open=0.0),
        "laptop": dict(density=500.0, friction=5.0, init_open=0.2),
        "toilet": dict(density=50.0, friction=5.0, init_open=0.25),
    }

    def __new__(cls, task: str, assets_dir, instances=None):
        if task == "bucket":
            return BucketAssets(assets_dir, instances)
        return super().__new__(cls)

    def __init__(self, task: str, assets_dir, instances=None):
        if task not in ASSET_TASKS:
            raise ValueError(f"unknown dexart task {task!r}; PartNet assets exist for {', '.join(ASSET_TASKS)}")
        self.task = task
        self.root = Path(assets_dir).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"dexart assets_dir {str(self.root)!r} is not a directory")
        self.ids = resolve_instances(task, instances)
        ann = self.root / "annotation"
        scale_path = ann / f"{task}_scale.json"
        self.scale = {} if task == "laptop" and not scale_path.is_file() else _read_json(scale_path)
        self.joints = _read_json(ann / f"{task}_joint_annotation.json") if task != "faucet" else {}
        self.toilet_joint = _read_toilet_joint(ann / "toilet_joint.txt") if task == "toilet" else {}
        for i in self.ids:
            d = self.instance_dir(i)
            need = [d / "mobility.urdf"] + ([d / "mobility_v2.json"] if task != "toilet" else [])
            for f in need:
                if not f.is_file():
                    raise FileNotFoundError(f"dexart assets: missing {f}")
            if task != "laptop" and str(i) not in self.scale:
                raise FileNotFoundError(f"dexart assets: {scale_path} has no entry for object id {i}")
            if task != "faucet":
                name = f"{task}_joint_annotation.json"
                if str(i) not in self.joints:
                    raise FileNotFoundError(f"dexart assets: {ann / name} has no entry for object id {i}")
                if not {"left", "middle"} <= set(self.joints[str(i)]):
                    raise ValueError(f"{ann / name}: id {i} needs 'left' and 'middle'")
            if task == "toilet" and i not in self.toilet_joint:
                raise FileNotFoundError(f"dexart assets: {ann / 'toilet_joint.txt'} has no line for object id {i}")

    def instance_dir(self, i: int) -> Path:
        return self.root / "sapien" / str(i)

    def _part_index(self, art, i: int) -> int:
        d = self.instance_dir(i)
        if self.task == "toilet":
            name = self.toilet_joint[i]["lid_joint"]
            names = [j.name for j in art.active_joints]
            if name not in names:
                raise ValueError(f"{self.root / 'annotation' / 'toilet_joint.txt'}: id {i}'s lid joint {name!r} "
                                 f"is not in its URDF (active joints: {names})")
            return names.index(name)
        if self.task == "faucet":
            return _hinge_index(d / "mobility_v2.json", art.dof, count=("hinge", "slider"), name="switch")
        return _hinge_index(d / "mobility_v2.json", art.dof, count=("free",), name=None)

    def build(self, scene, rng: np.random.Generator, *, visual: bool) -> O.ArticulatedObject:
        task, cfg = self.task, self._LOAD[self.task]
        i = int(self.ids[rng.integers(len(self.ids))])
        pos = (rng.uniform(0.0, 0.1), rng.uniform(-0.05, 0.05))  # DexArt: rand_pos 0.1 (faucet, laptop)
        d = self.instance_dir(i)
        loader = _urdf_loader(scene, self.scale.get(str(i), 1.0), fix_root=True)
        loader.set_density(cfg["density"])  # DexArt's loader config {'density': ...}
        art = _load_urdf(loader, d / "mobility.urdf", visual)
        art.name = f"{task}_{i}"
        k = self._part_index(art, i)
        joint = art.active_joints[k]
        for j in art.active_joints:
            j.set_friction(cfg["friction"])
        if task == "toilet":  # DexArt: every other joint locked at its lower limit
            for m, j in enumerate(art.active_joints):
                if m != k:
                    lo = float(j.limit[0][0])
                    j.set_limits(np.array([[lo, lo]], np.float32))
        ann = self.joints.get(str(i), {})
        left = float(ann.get("left", 0.0)) + cfg["init_open"]
        middle = float(ann.get("middle", 1.5))  # faucet: DexArt's success angle
        q = np.zeros(art.dof, np.float32)
        if task == "toilet":
            q[:] = [float(j.limit[0][0]) for j in art.active_joints]
        root = sapien.Pose()
        art.set_root_pose(root)
        q[k] = middle if task == "laptop" else left
        art.set_qpos(q)
        part = joint.child_link
        grip_local = _grip_local(part, along=0 if task == "toilet" else 2)
        base_name = self.toilet_joint.get(i, {}).get("body_link")
        base = next((l for l in art.links if l.name == base_name), None) or joint.parent_link or art.links[0]
        q[k] = left
        art.set_qpos(q)  # stand on the table at the reset pose
        root = sapien.Pose((pos[0], pos[1], _table_height(art)))
        art.set_root_pose(root)
        art.set_qpos(q)
        from kubm.sim.dexart.tasks import OBJECT_LINKS

        base_task, part_task = OBJECT_LINKS[task]
        return _at_rest(task, art, k, base, part, left, middle, grip_local, root,
                        {"instance": i, "scale": float(self.scale.get(str(i), 1.0)), "pos": pos},
                        {base_task: base.name, part_task: part.name})


def _at_rest(name: str, art, k: int, base, part, left: float, middle: float, grip_local, root, params: dict,
             link_names: dict) -> O.ArticulatedObject:
    """The built object at rest (zero joint velocities), its part's joint k moving from
    ``left`` (reset) to ``middle`` (goal)."""
    art.set_qvel(np.zeros(art.dof, np.float32))
    obj = O.ArticulatedObject(name=name, articulation=art, base=base, part=part, joint=art.active_joints[k],
                              q_start=left, q_goal=middle, grip_local=grip_local, root_pose=root, params=params)
    obj.joint_index = k
    obj.link_names = link_names
    return obj


def _read_toilet_joint(path: Path) -> dict:
    """DexArt's toilet_joint.txt: a header, then '<id> <lid joint> <lid link> <body link> [<seat link>]'."""
    if not path.is_file():
        raise FileNotFoundError(f"dexart assets: missing {path}")
    out = {}
    for n, line in enumerate(path.read_text().splitlines()[1:], start=2):
        f = line.split()
        if not f:
            continue
        if len(f) < 4:
            raise ValueError(f"{path}:{n}: expected '<id> <lid joint> <lid link> <body link> [<seat link>]'")
        out[int(f[0])] = dict(lid_joint=f[1], lid_link=f[2], body_link=f[3], seat_link=f[4] if len(f) > 4 else None)
    return out


def _hinge_index(mobility_v2: Path, dof: int, *, count, name) -> int:
    """DexArt: the part is the 'hinge' entry (named `name` if given); entries whose joint type
    is in `count` are the DoFs before it."""
    entries = _read_json(mobility_v2)
    n, index = 0, None
    for e in entries:
        if e.get("joint") in count:
            n += 1
        if e.get("joint") == "hinge" and (name is None or e.get("name") == name):
            index = n - 1
    if index is None or index < 0 or index >= dof:
        what = f"'hinge' entry named {name!r}" if name else "'hinge' entry"
        raise ValueError(f"{mobility_v2}: no usable {what} (dof {dof})")
    return index


def _urdf_loader(scene, scale, *, fix_root: bool):
    """SAPIEN's URDF loader with DexArt's settings shared by every PartNet object."""
    loader = scene.create_urdf_loader()
    loader.fix_root_link = fix_root
    loader.load_multiple_collisions_from_file = True
    loader.scale = float(scale)
    loader.set_material(1.0, 1.0, 0.1)
    return loader


def _load_urdf(loader, urdf: Path, visual: bool):
    if not visual:  # the 3.0.3 loader builds render shapes, which need a render device
        urdf = _without_visuals(urdf)
    return loader.load(str(urdf))


def _table_height(art) -> float:
    """Root z that puts the lowest collision point (at the current qpos, root at z = 0) on the table."""
    return -float(min(l.compute_global_aabb_tight()[0, 2] for l in art.links if l.collision_shapes))


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"dexart assets: missing {path}")
    with open(path) as f:
        return json.load(f)


def _grip_local(part, along: int = 2) -> sapien.Pose:
    """DexArt's handle point: x, z of the collision vertex furthest along world axis `along`
    (z: the highest; the toilet uses x), y the mean (world frame), stored relative to the link."""
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
        k = int(np.argmax(p[:, along]))
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
