"""DexArt's PartNet-Mobility loaders for faucet, laptop and toilet (`assets.PartNetAssets`),
against small synthetic directories in DexArt's download layout (physics only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

for _pkg in ("mani_skill", "pybullet_data"):
    if importlib.util.find_spec(_pkg) is None:
        pytest.skip(f"DexArt robot assets need `{_pkg}`", allow_module_level=True)

from kubm.sim.dexart import assets as A  # noqa: E402
from kubm.sim.dexart.env import DexArtEnv  # noqa: E402

IDS = {"faucet": (148, 1556), "laptop": (11395, 9748), "toilet": (102677, 101320)}

_BOX = '<visual><origin xyz="{p}"/><geometry><box size="{s}"/></geometry></visual>' \
       '<collision><origin xyz="{p}"/><geometry><box size="{s}"/></geometry></collision>'


def _box(p, s):
    return _BOX.format(p=" ".join(map(str, p)), s=" ".join(map(str, s)))


def _urdf(task: str) -> str:
    """Unit-scale objects (scaled by 0.1 in <task>_scale.json)."""
    if task == "faucet":  # base column + lever turning about z
        base = _box((0, 0, 1.0), (0.5, 0.5, 2.0))
        part = _box((-0.6, 0, 0.15), (1.2, 0.2, 0.2))
        joint = '<origin xyz="0 0 2.0"/><axis xyz="0 0 1"/><limit lower="-0.1" upper="1.8"/>'
        extra = ""
    else:  # laptop / toilet: base block + lid hinged at its back edge (+x) about y
        base = _box((0, 0, 0.1), (2.0, 3.0, 0.2))
        part = _box((-1.0, 0, 0.05), (2.0, 3.0, 0.1))
        joint = '<origin xyz="1.0 0 0.2"/><axis xyz="0 1 0"/><limit lower="0" upper="2.0"/>'
        extra = ""
        if task == "toilet":  # a seat on a second hinge, locked by the loader
            extra = ('<joint name="joint_1" type="revolute"><parent link="link_2"/><child link="link_1"/>'
                     '<origin xyz="1.0 0 0.2"/><axis xyz="0 1 0"/><limit lower="0" upper="1.5"/></joint>'
                     f'<link name="link_1">{_box((-1.0, 0, 0.3), (1.5, 2.0, 0.05))}</link>')
    base_link = "link_2" if task == "toilet" else "link_1"
    return f"""<?xml version="1.0"?>
<robot name="{task}">
  <link name="base"/>
  <joint name="fixed" type="fixed"><parent link="base"/><child link="{base_link}"/></joint>
  <link name="{base_link}">{base}</link>
  <joint name="joint_0" type="revolute"><parent link="{base_link}"/><child link="link_0"/>{joint}</joint>
  <link name="link_0">{part}</link>
  {extra}
</robot>
"""


def _synthetic(root, task, ids=None):
    ids = ids or IDS[task]
    ann = root / "annotation"
    ann.mkdir(parents=True)
    for i in ids:
        d = root / "sapien" / str(i)
        d.mkdir(parents=True)
        (d / "mobility.urdf").write_text(_urdf(task))
        if task == "faucet":
            (d / "mobility_v2.json").write_text('[{"id": 0, "joint": "hinge", "name": "switch"}, '
                                                '{"id": 1, "joint": "static", "name": "body"}]')
        elif task == "laptop":
            (d / "mobility_v2.json").write_text('[{"id": 0, "joint": "free", "name": "screen_dof"}, '
                                                '{"id": 1, "joint": "hinge", "name": "screen"}]')
    (ann / f"{task}_scale.json").write_text("{" + ", ".join(f'"{i}": 0.1' for i in ids) + "}")
    if task != "faucet":
        (ann / f"{task}_joint_annotation.json").write_text(
            "{" + ", ".join(f'"{i}": {{"left": 0.0, "middle": 1.5}}' for i in ids) + "}")
    if task == "toilet":
        (ann / "toilet_joint.txt").write_text(
            "index lid_joint lid_link body_link seat_link\n" + "".join(f"{i} joint_0 link_0 link_2 link_1\n" for i in ids))
    return root


def _env_with_assets(task, root, instances):
    return DexArtEnv(task, render=False, assets_dir=str(root), instances=instances)


@pytest.mark.parametrize("task", ["faucet", "laptop", "toilet"])
def test_partnet_layout_loads_part_link_and_joint(tmp_path, task):
    root = _synthetic(tmp_path / "assets", task)
    env = _env_with_assets(task, root, [IDS[task][1]])
    env.reset(0)
    obj = env.obj
    assert obj.params["instance"] == IDS[task][1] and obj.params["scale"] == 0.1
    assert obj.part.name == "link_0" and obj.joint.name == "joint_0"
    assert obj.base.name == ("link_2" if task == "toilet" else "link_1")
    init_open = {"faucet": 0.0, "laptop": 0.2, "toilet": 0.25}[task]
    assert obj.joint_angle() == pytest.approx(init_open, abs=1e-5)
    assert obj.q_goal == pytest.approx(1.5)
    lo = min(l.compute_global_aabb_tight()[0, 2] for l in obj.articulation.links if l.collision_shapes)
    assert abs(lo) < 1e-3  # standing on the table
    assert env.object_poses().shape == (2, 7)  # task link names map onto the URDF's links
    if task == "toilet":  # the seat's joint is locked
        seat = [j for j in obj.articulation.active_joints if j.name == "joint_1"][0]
        assert seat.limit[0][0] == pytest.approx(seat.limit[0][1])
    # grip point: on the part (within its bounding box, slack for the mean y)
    lo_p, hi_p = obj.part.compute_global_aabb_tight()
    g = obj.grip_pose().p
    assert np.all(g >= lo_p - 5e-3) and np.all(g <= hi_p + 5e-3)
    hold = env.initial_qpos()
    for _ in range(3):
        env.step(hold)
    assert not env.success()
    env.close()


@pytest.mark.parametrize("task", ["faucet", "laptop", "toilet"])
def test_partnet_layout_errors(tmp_path, task):
    root = _synthetic(tmp_path / "assets", task)
    with pytest.raises(ValueError, match=rf"unknown {task} object ids \[123\].*{IDS[task][0]}"):
        A.PartNetAssets(task, str(root), [123])
    with pytest.raises(FileNotFoundError, match=r"sapien/\d+/mobility.urdf"):
        A.PartNetAssets(task, str(root), "seen")  # only one seen id exists on disk
    if task == "toilet":
        (root / "annotation" / "toilet_joint.txt").write_text("index lid_joint lid_link body_link\n")
        with pytest.raises(FileNotFoundError, match="toilet_joint.txt has no line for object id 101320"):
            A.PartNetAssets(task, str(root), [101320])
    (root / "annotation" / f"{task}_scale.json").unlink()
    if task == "laptop":  # DexArt: the laptop scale file is optional (scale 1)
        assert A.PartNetAssets(task, str(root), [9748]).scale == {}
    else:
        with pytest.raises(FileNotFoundError, match=f"{task}_scale.json"):
            A.PartNetAssets(task, str(root), [IDS[task][1]])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        A.PartNetAssets(task, str(tmp_path / "nope"))


def test_partnet_assets_bucket_and_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="unknown dexart task 'drawer'"):
        A.PartNetAssets("drawer", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        A.PartNetAssets("bucket", str(tmp_path / "nope"))  # the bucket goes to BucketAssets


def test_env_routes_assets_dir_to_partnet_loader(tmp_path):
    """DexArtEnv(task, assets_dir=...) loads the PartNet object for every DexArt task."""
    for task in ("faucet", "laptop", "toilet"):
        root = _synthetic(tmp_path / task, task)
        env = DexArtEnv(task, render=False, assets_dir=str(root), instances=[IDS[task][0]])
        env.reset(0)
        assert isinstance(env._assets, A.PartNetAssets) and env.obj is not None
        env.close()
