"""MPPI expert (issue 6): optimiser on a tiny known system, determinism, task costs,
and one Adroit hammer / pen episode each with the default params."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from kubm.experts.mppi import COSTS, Cost, Features, MPPIExpert, make_cost
from kubm.experts.registry import make_expert

SLIDE_XML = """
<mujoco>
  <option timestep="0.002"/>
  <worldbody>
    <body name="cart">
      <joint name="x" type="slide" axis="1 0 0" range="-0.5 0.5" damping="2"/>
      <geom type="box" size="0.05 0.05 0.05" mass="1"/>
      <site name="tip" pos="0 0 0"/>
    </body>
  </worldbody>
  <actuator>
    <position joint="x" kp="50" ctrlrange="-0.5 0.5"/>
  </actuator>
</mujoco>
"""
TARGET = 0.3


class SlideEnv:
    """The ManipulationEnv bits MPPI reads, on a one-joint cart with a position servo."""

    task = None
    frame_skip = 5

    def __init__(self):
        self.model = mujoco.MjModel.from_xml_string(SLIDE_XML)
        self.data = mujoco.MjData(self.model)
        self.qpos_adr = np.array([0])
        self.dof_adr = np.array([0])

    def joint_limits(self):
        return self.model.jnt_range.copy()

    def reset(self, seed):
        mujoco.mj_resetData(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)

    def step(self, action):
        q = np.clip(np.asarray(action, float), *self.model.jnt_range[0])
        for _ in range(self.frame_skip):
            self.data.ctrl[:] = q  # kp·(ctrl − q): no bias on a horizontal slide
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)


class SlideCost(Cost):
    name = "slide"
    sites = ("tip",)

    def __call__(self, f):
        return np.abs(f.site["tip"][..., 0] - TARGET)


SLIDE_PARAMS = dict(samples=8, horizon=10, temperature=0.1, sigma=0.5, knot=2, threads=1)


def run_slide(params, seed=0, steps=40):
    env = SlideEnv()
    env.reset(seed)
    expert = MPPIExpert(params, cost=SlideCost())
    expert.reset(env, seed)
    actions = []
    for _ in range(steps):
        actions.append(expert.act(env))
        env.step(actions[-1])
    return env, np.array(actions)


@pytest.mark.parametrize("backend", ["rollout", "python"])
def test_mppi_drives_slide_to_target(backend):
    env, actions = run_slide({**SLIDE_PARAMS, "backend": backend})
    assert abs(env.data.qpos[0] - TARGET) < 0.03
    assert actions.shape == (40, 1)


def test_mppi_deterministic_by_seed():
    _, a = run_slide(SLIDE_PARAMS, seed=1, steps=10)
    _, b = run_slide(SLIDE_PARAMS, seed=1, steps=10)
    _, c = run_slide(SLIDE_PARAMS, seed=2, steps=10)
    _, d = run_slide({**SLIDE_PARAMS, "seed": 5}, seed=1, steps=10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_mppi_threads_do_not_change_the_result():
    _, a = run_slide({**SLIDE_PARAMS, "threads": 1}, steps=10)
    _, b = run_slide({**SLIDE_PARAMS, "threads": 2}, steps=10)
    np.testing.assert_array_equal(a, b)


def test_mppi_rejects_unknown_params_and_costs():
    with pytest.raises(ValueError, match="unknown mppi params"):
        MPPIExpert({"samplez": 3})
    with pytest.raises(ValueError, match="unknown MPPI cost"):
        make_cost("juggle")
    env = SlideEnv()
    with pytest.raises(ValueError, match="cannot choose a cost"):
        MPPIExpert({}).reset(env, 0)  # no task name and no cost


# ------------------------------------------------------------------ task costs
def _goal_features(name: str) -> Features:
    """A hand-made goal state of each Adroit task (world metres / radians)."""
    up = np.array([0.0, 0.0, 1.0])
    if name == "pen":
        c = np.array([0.0, -0.2, 0.25])
        return Features(
            site={"eps_ball": c, "object_top": c + 0.1 * up, "object_bottom": c - 0.1 * up,
                  "target_top": np.array([0.3, 0.0, 0.3]) + 0.05 * up,
                  "target_bottom": np.array([0.3, 0.0, 0.3]) - 0.05 * up},
            body={"Object": c},
        )
    if name == "hammer":
        handle, nail = np.array([0.0, -0.1, 0.2]), np.array([0.05, 0.2, 0.15])
        return Features(site={"S_grasp": handle, "tool": nail, "S_target": nail, "nail_goal": nail},
                        body={"Object": handle})
    if name == "door":
        h = np.array([-0.2, 0.3, 0.25])
        return Features(site={"S_grasp": h, "S_handle": h},
                        joint={"door_hinge": np.array(1.57), "latch": np.array(0.0)})
    b = np.array([0.1, 0.05, 0.2])  # relocate: ball held at the target
    return Features(site={"S_grasp": b, "target": b}, body={"Object": b})


def _perturbed(f: Features, rng, n=64, scale=0.05) -> Features:
    def jitter(d, width):
        return {k: v + rng.normal(0, scale, (n, *np.shape(v))) if width else v for k, v in d.items()}
    return Features(site=jitter(f.site, 3), body=jitter(f.body, 3),
                    joint={k: v - np.abs(rng.normal(0, 0.3, n)) for k, v in f.joint.items()})


@pytest.mark.parametrize("name", sorted(COSTS))
def test_cost_minimal_at_goal(name):
    cost = make_cost(name)
    goal = _goal_features(name)
    assert set(goal.site) >= set(cost.sites) and set(goal.body) >= set(cost.bodies)
    c0 = cost(goal)
    assert np.shape(c0) == () and c0 == pytest.approx(0.0, abs=1e-9)
    c = cost(_perturbed(goal, np.random.default_rng(0)))
    assert c.shape == (64,) and np.all(c > c0)


# ------------------------------------------------------------- Adroit episodes
def test_mppi_leaves_live_state_alone_and_returns_joint_targets():
    from kubm.sim.adroit import AdroitEnv

    env = AdroitEnv("pen", render=False)
    env.reset(0)
    expert = make_expert("mppi", {"samples": 4, "horizon": 3})
    expert.reset(env, 0)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    before = np.empty(mujoco.mj_stateSize(env.model, spec))
    after = before.copy()
    mujoco.mj_getState(env.model, env.data, before, spec)
    a = expert.act(env)
    mujoco.mj_getState(env.model, env.data, after, spec)
    np.testing.assert_array_equal(before, after)
    lim = env.joint_limits()
    assert a.shape == (env.action_dim,) and np.all(a >= lim[:, 0]) and np.all(a <= lim[:, 1])
    # The plan starts at "hold the current pose": with one sample (the noiseless mean) that is the action.
    hold = make_expert("mppi", {"samples": 1, "horizon": 3})
    hold.reset(env, 0)
    q = np.clip(env.data.qpos[env.qpos_adr], lim[:, 0], lim[:, 1])
    np.testing.assert_allclose(hold.act(env), q, atol=1e-9)
    env.close()


@pytest.mark.parametrize("task,seed", [("hammer", 0), ("pen", 100000)])
def test_mppi_default_expert_succeeds(task, seed):
    """One full episode with config's `expert: {name: mppi}` (no params): ~12 s hammer, ~15 s pen."""
    from kubm.sim.adroit import DEFAULT_HORIZON, AdroitEnv

    env = AdroitEnv(task, render=False)
    env.reset(seed)
    expert = make_expert("mppi", {})
    expert.reset(env, seed)
    for _ in range(DEFAULT_HORIZON[task]):
        env.step(expert.act(env))
    assert env.success()
    env.close()
