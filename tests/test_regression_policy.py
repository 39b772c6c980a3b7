"""Time-indexed regression baseline: exact recovery, open-loop plans, save/load, fit stage."""

import json

import numpy as np
import pytest
from test_fit import StandInAE, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies.registry import policy_class
from kubm.policies import IncompatibleError, load_policy
from kubm.policies.features import make_xi
from kubm.policies.regression import RegressionConfig, RegressionPolicy
from kubm.stages.fit import fit
from kubm.storage.episode_store import EpisodeStore

D_Q, D_FLOW, D_C = 2, 3, 1
D_X = D_Q + D_FLOW + D_C


def synthetic(n=30, T=12, seed=0, lengths=None, s=2.0):
    """a_t = B_t ξ_{-1} + c_t with known per-step (B_t, c_t)."""
    rng = np.random.default_rng(seed)
    B, c = rng.normal(size=(T, D_Q, D_X)), rng.normal(size=(T, D_Q))
    x0, acts, obs = [], [], []
    for i in range(n):
        qpos0, flow0, ctx = rng.normal(size=D_Q), rng.normal(size=D_FLOW), rng.normal(size=D_C)
        x = make_xi(qpos0, flow0, ctx, s).astype(np.float64)
        L = T if lengths is None else lengths[i % len(lengths)]
        x0.append(x)
        acts.append((np.einsum("tij,j->ti", B, x) + c)[:L])
        obs.append((qpos0, flow0, ctx))
    return np.stack(x0), acts, obs, (B, c)


def fit_policy(x0, acts, ridge=0.0, s=2.0, lim=1e3, **kw):
    return RegressionPolicy.fit(RegressionConfig(ridge=ridge), x0, acts, d_q=D_Q, d_flow=D_FLOW, d_c=D_C, s=s,
                                action_low=np.full(D_Q, -lim), action_high=np.full(D_Q, lim), **kw)


def test_reproduces_time_indexed_plan():
    x0, acts, obs, (B, c) = synthetic()
    policy = fit_policy(x0, acts)
    assert policy.T_max == 12
    for (qpos0, flow0, ctx), a in zip(obs, acts):
        plan = policy.plan(qpos0, flow0, ctx, 12)
        assert plan.flow is None and plan.actions.shape == (12, D_Q)
        np.testing.assert_allclose(plan.actions, a, atol=1e-4)
    # a new initial observation, not in training: the affine maps generalise exactly
    rng = np.random.default_rng(9)
    qpos0, flow0, ctx = rng.normal(size=D_Q), rng.normal(size=D_FLOW), rng.normal(size=D_C)
    x = make_xi(qpos0, flow0, ctx, 2.0).astype(np.float64)
    np.testing.assert_allclose(policy.plan(qpos0, flow0, ctx, 12).actions, np.einsum("tij,j->ti", B, x) + c,
                               atol=1e-4)


def test_variable_lengths_hold_last_and_clip():
    x0, acts, obs, _ = synthetic(n=40, T=15, lengths=[15, 10, 12, 15])
    policy = fit_policy(x0, acts)
    assert policy.T_max == 15
    qpos0, flow0, ctx = obs[0]
    plan = policy.plan(qpos0, flow0, ctx, 25)
    np.testing.assert_allclose(plan.actions[:15], acts[0], atol=1e-4)
    assert np.array_equal(plan.actions[15:], np.repeat(plan.actions[14:15], 10, axis=0))
    assert len(policy.plan(qpos0, flow0, ctx, 5).actions) == 5
    clipped = fit_policy(x0, acts, lim=0.5).plan(qpos0, flow0, ctx, 15).actions
    assert clipped.max() <= 0.5 and clipped.min() >= -0.5
    assert not hasattr(policy, "replan") and policy.replan_threshold_px is None


def test_ridge_shrinks_towards_the_mean_plan():
    x0, acts, obs, _ = synthetic()
    big = fit_policy(x0, acts, ridge=1e6)
    mean = np.mean(np.stack(acts), axis=0)
    np.testing.assert_allclose(big.plan(*obs[0], 12).actions, mean, atol=1e-3)


def test_save_load_and_config(tmp_path):
    x0, acts, obs, _ = synthetic()
    policy = fit_policy(x0, acts, ridge=0.01, task_id="adroit/relocate", seed=2,
                        feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C})
    want = policy.plan(*obs[1], 20)
    policy.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["method"] == "regression" and meta["seed"] == 2 and meta["config"] == {"ridge": 0.01}
    assert policy_class("regression") is RegressionPolicy
    for loaded in (RegressionPolicy.load(tmp_path / "m"), load_policy(tmp_path / "m")):
        assert np.array_equal(loaded.plan(*obs[1], 20).actions, want.actions)
    with pytest.raises(IncompatibleError, match=r"d_q=30 \(model: 2\)"):
        load_policy(tmp_path / "m", feature_attrs={"d_q": 30, "d_flow": D_FLOW, "d_c": D_C})
    with pytest.raises(ValueError, match=r"unknown regression config key\(s\) \['lambda'\]; known: \['ridge'\]"):
        RegressionConfig.from_dict({"lambda": 1})
    with pytest.raises(ValueError, match="ridge=-1"):
        RegressionConfig(ridge=-1)


def test_fit_stage_regression(tmp_path):
    train = write_features(tmp_path / "train.zarr", n_eps=20)
    test = write_features(tmp_path / "test.zarr", n_eps=2, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["regression"]["ridge"] = 1e-6
    task = resolve_task(config, "adroit", "relocate")
    out = tmp_path / "regression" / "seed1"
    summary = fit(task, config, "regression", 1, train, test, None, out, threads=1, progress=False, ae=StandInAE())
    assert summary["method"] == "regression" and summary["seed"] == 1 and summary["T_max"] == 24
    assert {"model.safetensors", "config.json", "diagnostics.json"} <= {p.name for p in out.iterdir()}
    # actions are a linear function of the hidden initial state, which ξ_{-1} determines (the
    # test store is another random system: its error is only reported)
    assert summary["train_action_rms_rad"] < 1e-3 and np.isfinite(summary["openloop_action_rms_rad"])
    policy = load_policy(out, task_id="adroit/relocate", feature_attrs=EpisodeStore.open(test).attrs)
    assert policy.T_max == 24
