"""AdroitEnv: determinism, rendering, segmentation/projection, success flags, control."""

from __future__ import annotations

import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from conftest import check_rgb_skip_keeps_depth_and_seg

from kubm.sim.adroit import DEFAULT_CAMERAS, OBJECT_STATE_LAYOUT, TASKS, AdroitEnv
from kubm.sim.base import CameraSpec, ManipulationEnv
from kubm.sim.registry import make_env

# A point well inside each task's object, used to test projection into its mask.
OBJECT_CENTRE = {
    "relocate": lambda d: d.body("Object").xpos,
    "door": lambda d: d.body("door").xpos,
    "hammer": lambda d: d.body("Object").xpos,
    "pen": lambda d: d.body("Object").xpos,
}


@pytest.fixture(scope="module")
def relocate():
    env = AdroitEnv("relocate", camera=CameraSpec())
    yield env
    env.close()


def test_protocol_and_attributes(relocate):
    env = relocate
    assert isinstance(env, ManipulationEnv)
    assert (env.suite, env.task, env.horizon, env.fps) == ("adroit", "relocate", 200, 100.0)
    assert env.action_dim == len(env.joint_names) == 30
    assert env.joint_names[:6] == ["ARTx", "ARTy", "ARTz", "ARRx", "ARRy", "ARRz"]
    assert env.joint_limits().shape == (30, 2)
    assert env.model.body(env.object_seg_ids[0]).name == "Object"
    assert AdroitEnv("pen", render=False).horizon == 100


def test_determinism(relocate):
    rng = np.random.default_rng(0)
    lim = relocate.joint_limits()
    actions = rng.uniform(lim[:, 0], lim[:, 1], size=(5, relocate.action_dim))

    def rollout():
        obs = [relocate.reset(7)]
        obs += [relocate.step(a) for a in actions]
        return obs

    first, second = rollout(), rollout()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.qpos, b.qpos)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.seg, b.seg)
    assert not np.array_equal(relocate.reset(8).rgb, first[0].rgb)  # the seed moves the ball


def test_render_shapes_and_dtypes(relocate):
    obs = relocate.reset(0)
    assert obs.qpos.dtype == np.float32 and obs.qpos.shape == (30,)
    assert obs.rgb.shape == (128, 128, 3) and obs.rgb.dtype == np.uint8
    assert obs.depth.shape == (128, 128) and obs.depth.dtype == np.float32
    assert obs.seg.shape == (128, 128) and obs.seg.dtype == np.uint8
    assert 0.2 < np.median(obs.depth) < 3.0  # metres, mostly table
    assert (obs.seg == 0).any() and obs.seg.max() < relocate.model.nbody
    k = relocate.camera_intrinsics()
    assert k.shape == (3, 3) and k[0, 0] == k[1, 1] > 0


def _project(env, point):
    cam = env.camera_extrinsics() @ np.append(point, 1.0)
    u, v, w = env.camera_intrinsics() @ cam[:3]
    return int(round(u / w)), int(round(v / w)), cam[2]


def test_skipping_the_colour_pass_leaves_depth_and_seg(relocate):
    """render_rgb=False (the evaluator with sim perception) skips the RGB pass; the depth and
    seg pass, all that sim tracking reads, is the same."""
    check_rgb_skip_keeps_depth_and_seg(relocate, 100000)


@pytest.mark.parametrize("task", TASKS)
def test_object_mask_and_projection(task):
    env = AdroitEnv(task, camera=CameraSpec())
    obs = env.reset(1)
    mask = np.isin(obs.seg, env.object_seg_ids)
    assert mask.sum() > 10, "object not visible from the default camera"
    u, v, z = _project(env, OBJECT_CENTRE[task](env.data))
    assert 0 <= u < 128 and 0 <= v < 128
    assert mask[v - 1 : v + 2, u - 1 : u + 2].any(), "object centre projects outside its mask"
    assert obs.depth[v, u] <= z + 1e-3  # the visible surface is not behind the centre
    assert len(env.object_state()) == sum(w for _, w in OBJECT_STATE_LAYOUT[task])
    assert env.object_state().dtype == np.float32
    env.close()


def test_named_camera_projection():
    env = AdroitEnv("relocate", camera=CameraSpec(name="fixed"))
    obs = env.reset(3)
    u, v, _ = _project(env, env.data.body("Object").xpos)
    assert np.isin(obs.seg[v - 1 : v + 2, u - 1 : u + 2], env.object_seg_ids).any()
    with pytest.raises(ValueError, match="vil_camera"):
        AdroitEnv("relocate", camera=CameraSpec(name="nope"), render=False)
    env.close()


def test_default_cameras_cover_tasks():
    assert set(DEFAULT_CAMERAS) == set(TASKS)


def _set_joint(env, name, value):
    env.data.qpos[env.model.joint(name).qposadr[0]] = value
    mujoco.mj_forward(env.model, env.data)


def test_success_relocate():
    env = AdroitEnv("relocate", render=False)
    env.reset(0)
    target, body = env.data.site("target").xpos.copy(), env.model.body("Object").pos
    for axis, name in enumerate(["OBJTx", "OBJTy", "OBJTz"]):
        _set_joint(env, name, target[axis] - body[axis] + (0.05 if axis == 0 else 0.0))
    assert env.success()  # 5 cm off
    _set_joint(env, "OBJTx", target[0] - body[0] + 0.15)
    assert not env.success()


def test_success_door():
    env = AdroitEnv("door", render=False)
    env.reset(0)
    assert not env.success()
    _set_joint(env, "door_hinge", 1.0)
    assert not env.success()
    _set_joint(env, "door_hinge", 1.4)
    assert env.success()
    assert env.object_state()[0] == pytest.approx(1.4)


def test_success_hammer():
    env = AdroitEnv("hammer", render=False)
    env.reset(0)
    assert not env.success()
    _set_joint(env, "nail_dir", 0.09)  # nail driven in: 1 mm from the goal
    assert env.success()


def test_success_pen():
    env = AdroitEnv("pen", render=False)
    env.reset(0)
    assert not env.success()
    goal, body = env.data.site("eps_ball").xpos.copy(), env.model.body("Object").pos
    for axis, name in enumerate(["OBJTx", "OBJTy", "OBJTz"]):
        _set_joint(env, name, goal[axis] - body[axis])
    # Turn the goal (a fixed body) to the pen's current orientation.
    env.model.body_quat[env.model.body("target").id] = env.data.body("Object").xquat
    mujoco.mj_forward(env.model, env.data)
    assert _pen_dot(env) > 0.99 and env.success()
    _set_joint(env, "OBJTz", goal[2] - body[2] + 0.1)  # right orientation, 10 cm off
    assert not env.success()


def _pen_dot(env):
    s = env.object_state()
    return float(s[3:6] @ s[9:12])


@pytest.mark.parametrize("task", ["relocate", "door"])
def test_hold_still_keeps_arm_in_place(task):
    env = AdroitEnv(task, render=False)
    obs0 = obs = env.reset(2)
    for _ in range(50):
        obs = env.step(obs.qpos)
    # Re-commanding the measured pose integrates small disturbances (here the kick
    # of ARTy's lower limit at reset), so "in place" means within a few cm / rad.
    assert np.abs(obs.qpos - obs0.qpos).max() < 0.05


def test_action_is_clipped_to_joint_limits():
    env = AdroitEnv("relocate", render=False)
    obs = env.reset(0)
    target = obs.qpos.copy()
    target[0] = 10.0  # ARTx far beyond its 0.25 m limit
    for _ in range(100):
        obs = env.step(target)
    assert obs.qpos[0] == pytest.approx(0.25, abs=0.02)


def test_physics_only_renders_nothing():
    """render=False steps physics only (its speed is measured in benchmarks/, not asserted here)."""
    env = AdroitEnv("relocate", render=False)
    obs = env.reset(0)
    for _ in range(30):
        obs = env.step(obs.qpos)
    assert obs.rgb is None and obs.depth is None


def test_registry():
    env = make_env("adroit", "door", {"camera": {"position": [0.5, -0.5, 0.6], "lookat": [0, 0, 0.2]}}, render=False)
    assert env.task == "door" and env.camera.position == (0.5, -0.5, 0.6)
    spec = CameraSpec(name="fixed", width=64, height=48)
    env = make_env("adroit", "relocate", {"camera_spec": spec, "camera": {"width": 128}}, render=False)
    assert (env.camera.name, env.camera.width, env.camera.height) == ("fixed", 64, 48)
    with pytest.raises(ValueError, match="fovy_deg"):
        make_env("adroit", "relocate", {"camera": {"fov": 40}}, render=False)
    with pytest.raises(ValueError, match="relocate"):
        make_env("adroit", "drawer", {})
    with pytest.raises(ValueError, match="adroit"):
        make_env("metaworld", "door", {})
    with pytest.raises(ValueError, match="unknown dexart task 'drawer'"):
        make_env("dexart", "drawer", {})


@pytest.mark.parametrize("backend", ["glx", "osmesa"])
def test_unusable_gl_backend_raises_simulator_error(backend):
    """GLX without an X display always fails; OSMesa fails where libosmesa6 is missing."""
    code = "from kubm.sim.registry import make_env\nmake_env('adroit', 'relocate', {})"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode == 0:
        pytest.skip(f"{backend} works on this machine")
    assert "SimulatorError" in out.stderr
    assert "libosmesa6" in out.stderr and "MUJOCO_GL=egl" in out.stderr
