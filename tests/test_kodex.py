"""KODex (EDMD) baseline: closed-form K, polynomial lift, planner, save/load, fit stage."""

import json

import numpy as np
import pytest
import torch
from test_fit import AE_SHA, StandInAE, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies.registry import policy_class
from kubm.policies import IncompatibleError, check_compatible, load_policy
from kubm.policies.kodex import KodexConfig, KodexPolicy, PolynomialLift
from kubm.policies.koopman import calibrate_replan_threshold
from kubm.stages.fit import fit
from kubm.storage.episode_store import EpisodeStore

D_Q, D_FLOW, D_C = 3, 6, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def system(d=4, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return Q @ np.diag(np.linspace(0.8, 0.99, d)) @ Q.T + 0.05 * rng.normal(size=(d, d))


def sequences(A, n=10, T=25, seed=0, offset=None):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = [rng.normal(size=len(A))]
        for _ in range(T - 1):
            x.append(A @ x[-1] if offset is None else A @ x[-1] + offset)
        out.append(np.asarray(x))
    return out


def fit_policy(config, seqs, d_q, d_flow, d_c, s=1.0, lim=100.0, **kw):
    return KodexPolicy.fit(config, seqs, d_q=d_q, d_flow=d_flow, d_c=d_c, s=s, action_low=np.full(d_q, -lim),
                           action_high=np.full(d_q, lim), **kw)


def test_recovers_linear_K_exactly():
    """Degree 1, no normalisation, no constant: the lift is the identity and K must be A."""
    A = system()
    cfg = KodexConfig(degree=1, normalize="none", constant=False, ridge=0.0)
    policy, diag = fit_policy(cfg, sequences(A), 2, 2, 0)
    assert policy.d_z == 4
    np.testing.assert_allclose(policy.K, A, atol=1e-10)
    assert diag["one_step_rel"] < 1e-18 and diag["n_pairs"] == 10 * 24
    # a tiny ridge barely moves it
    policy, _ = fit_policy(KodexConfig(degree=1, normalize="none", constant=False, ridge=1e-10), sequences(A), 2, 2, 0)
    np.testing.assert_allclose(policy.K, A, atol=1e-6)


def test_affine_system_in_standardised_coordinates():
    """x' = A x + b, standardised ξ̄ and a constant: K is exact, its state block has A's
    eigenvalues and the constant's eigenvalue is 1; plans reproduce the trajectories."""
    A, b = system(seed=1), np.array([0.3, -0.2, 0.1, 0.5])
    seqs = sequences(A, seed=2, offset=b)
    policy, diag = fit_policy(KodexConfig(degree=1, ridge=0.0), seqs, 2, 1, 1)
    assert policy.d_z == 5 and diag["one_step_rel"] < 1e-20
    eig = np.sort_complex(policy.eigenvalues())
    want = np.sort_complex(np.concatenate([np.linalg.eigvals(A), [1.0]]))
    np.testing.assert_allclose(eig, want, atol=1e-8)
    seq = seqs[0]  # context (last dim) is not constant here, but the dynamics are linear anyway
    plan = policy.rollout(policy.lifter(seq[0]), len(seq) - 1)
    np.testing.assert_allclose(plan.actions, seq[1:, :2], atol=1e-6)
    np.testing.assert_allclose(plan.flow, seq[1:, 2:3], atol=1e-6)


def test_quadratic_lift_is_exact_for_bilinear_observables():
    """For x' = A x, the degree-2 monomials evolve linearly too (x⊗x → (A⊗A) x⊗x): with
    pca_components=None the degree-2 lift is closed and multi-step predictions are exact."""
    A = system(3, seed=3)
    seqs = sequences(A, n=12, T=20, seed=4)
    cfg = KodexConfig(degree=2, pca_components=None, normalize="none", constant=False, ridge=0.0)
    policy, diag = fit_policy(cfg, seqs, 1, 2, 0)
    assert policy.d_z == 3 + 6 and diag["one_step_rel"] < 1e-16
    z0 = policy.lifter(seqs[0][0])
    z = z0
    for _ in range(19):
        z = policy.K @ z
    np.testing.assert_allclose(z, policy.lifter(seqs[0][-1]), atol=1e-7)


def test_lift_is_state_inclusive_and_sized():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(30, D_Q + D_FLOW + D_C)) * 3 + 1 for _ in range(6)]
    for comps, m in ((4, 4), (None, D_Q + D_FLOW + D_C), (100, D_Q + D_FLOW + D_C)):
        cfg = KodexConfig(degree=3, pca_components=comps)
        policy, _ = fit_policy(cfg, seqs, D_Q, D_FLOW, D_C)
        d_xi = D_Q + D_FLOW + D_C
        assert policy.d_z == PolynomialLift.n_dims(d_xi, m, 3, True) == d_xi + 1 + m * (m + 1) // 2 + \
            m * (m + 1) * (m + 2) // 6
        z = policy.lifter(seqs[0])
        lf = policy.lifter
        np.testing.assert_allclose(z[:, :d_xi] * lf.state_scale + lf.state_shift, seqs[0], atol=1e-10)
        assert np.all(z[:, d_xi] == 1.0)
    # whitened PCA components: unit variance over the training rows
    policy, _ = fit_policy(KodexConfig(pca_components=4), seqs, D_Q, D_FLOW, D_C)
    lf = policy.lifter
    p = ((np.concatenate(seqs) - lf.state_shift) / lf.state_scale - lf.pca_mean) @ lf.pca_basis
    np.testing.assert_allclose(p.std(axis=0, ddof=1), 1.0, atol=1e-8)
    with pytest.raises(ValueError, match="above max_lift_dims=50; lower fit.kodex.pca_components"):
        fit_policy(KodexConfig(pca_components=None, max_lift_dims=50), seqs, D_Q, D_FLOW, D_C)


def trained(tmp_path=None, **kw):
    rng = np.random.default_rng(5)
    seqs = [np.cumsum(rng.normal(size=(40, D_Q + D_FLOW + D_C)) * 0.1, axis=0) for _ in range(8)]
    for s in seqs:
        s[:, D_Q + D_FLOW:] = s[0, D_Q + D_FLOW:]
    return fit_policy(KodexConfig(pca_components=5, **kw), seqs, D_Q, D_FLOW, D_C, s=1.5, lim=0.5,
                      task_id="adroit/relocate", config_hash="abc", seed=3,
                      feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C, "ae": {"sha256": "a" * 64},
                                     "other": 1})[0]


def test_plan_replan_and_clipping():
    policy = trained()
    qpos0, flow0, ctx = np.full(D_Q, 0.1), np.linspace(-1, 1, D_FLOW), np.array([0.3, -0.3])
    plan = policy.plan(qpos0, flow0, ctx, 30)
    assert plan.actions.shape == (30, D_Q) and plan.flow.shape == (30, D_FLOW)
    assert plan.actions.min() >= -0.5 and plan.actions.max() <= 0.5
    z0 = policy.lift(qpos0, flow0, ctx)
    np.testing.assert_allclose(plan.flow[0], ((policy.K @ z0)[D_Q:D_Q + D_FLOW] * policy.lifter.state_scale[
        D_Q:D_Q + D_FLOW] + policy.lifter.state_shift[D_Q:D_Q + D_FLOW]) / 1.5, rtol=1e-5, atol=1e-6)
    re = policy.replan(plan.actions[4], plan.flow[4], ctx, 10)
    want = policy.rollout(policy.lift(plan.actions[4], plan.flow[4], ctx), 10)
    assert np.array_equal(re.actions, want.actions)
    with pytest.raises(ValueError, match="flow has 4 values, the model expects 6"):
        policy.plan(qpos0, np.zeros(4), ctx, 5)


def test_calibration_reuses_kubm_procedure():
    from kubm.policies.features import Episode

    policy = trained()
    rng = np.random.default_rng(0)
    eps = [Episode(action=rng.normal(size=(20, D_Q)).astype(np.float32) * 0.1,
                   qpos=rng.normal(size=(20, D_Q)).astype(np.float32) * 0.1,
                   flow=np.cumsum(rng.normal(size=(20, D_FLOW)), 0).astype(np.float32) * 0.1,
                   context=np.array([0.1, 0.2], np.float32), seed=i) for i in range(3)]
    cfg = policy.config
    calib = calibrate_replan_threshold(policy, eps, StandInAE(D_FLOW), horizon=cfg.calib_horizon,
                                       starts_per_demo=cfg.calib_starts_per_demo, quantile=cfg.calib_quantile)
    assert calib["replan_threshold_px"] > 0 and calib["horizon"] == 20 and calib["starts_per_demo"] == 8


def test_save_load_identical_and_registered(tmp_path):
    policy = trained()
    policy.replan_threshold_px = 2.5
    args = (np.full(D_Q, 0.1), np.linspace(-1, 1, D_FLOW), np.array([0.3, -0.3]), 40)
    want = policy.plan(*args)
    policy.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["method"] == "kodex" and meta["format"] == 1 and meta["seed"] == 3 and meta["task"] == "adroit/relocate"
    assert (meta["d_q"], meta["d_flow"], meta["d_c"], meta["d_z"]) == (D_Q, D_FLOW, D_C, policy.d_z)
    assert "other" not in meta["features"] and meta["config"]["pca_components"] == 5
    assert policy_class("kodex") is KodexPolicy
    for loaded in (KodexPolicy.load(tmp_path / "m"), load_policy(tmp_path / "m")):
        got = loaded.plan(*args)
        assert np.array_equal(got.actions, want.actions) and np.array_equal(got.flow, want.flow)
        assert loaded.replan_threshold_px == 2.5 and loaded.source == str(tmp_path / "m")
    with pytest.raises(IncompatibleError, match=r"d_flow=128 \(model: 6\)"):
        load_policy(tmp_path / "m", feature_attrs={"d_q": D_Q, "d_flow": 128, "d_c": D_C})
    with pytest.raises(IncompatibleError, match="not adroit/door"):
        check_compatible(KodexPolicy.load(tmp_path / "m"), None, "adroit/door")
    with pytest.raises(FileNotFoundError, match="not a saved KODex model"):
        KodexPolicy.load(tmp_path / "nothing")


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown KODex config key\(s\) \['degre'\]; known: .*'degree'.*'ridge'"):
        KodexConfig.from_dict({"degre": 2})
    with pytest.raises(ValueError, match="degree=0 must be an integer >= 1"):
        KodexConfig(degree=0)
    with pytest.raises(ValueError, match="ridge=-1"):
        KodexConfig(ridge=-1)
    assert KodexConfig.from_dict(KodexConfig(degree=3).to_dict()) == KodexConfig(degree=3)


def test_fit_stage_kodex(tmp_path):
    train = write_features(tmp_path / "train.zarr")
    test = write_features(tmp_path / "test.zarr", n_eps=2, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["kodex"].update({"pca_components": 6})
    task = resolve_task(config, "adroit", "relocate")
    out = tmp_path / "kodex" / "seed0"
    summary = fit(task, config, "kodex", 0, train, test, None, out, threads=1, progress=False, ae=StandInAE())
    assert summary["method"] == "kodex" and summary["seed"] == 0 and summary["train_wall_s"] >= 0
    assert {"model.safetensors", "config.json", "diagnostics.json", "eigs.png", "openloop.png"} <= \
        {p.name for p in out.iterdir()}
    policy = load_policy(out, task_id="adroit/relocate", feature_attrs=EpisodeStore.open(test).attrs)
    assert policy.replan_threshold_px > 0 and policy.feature_attrs["ae"]["sha256"] == AE_SHA
    # the hidden system is linear in ξ: the one-step fit is near exact
    assert summary["one_step_rel"] < 1e-3
    other = write_features(tmp_path / "d4.zarr", d_flow=4)
    with pytest.raises(IncompatibleError, match=r"d_flow=4 \(model: 6\)"):
        load_policy(out, feature_attrs=EpisodeStore.open(other).attrs)
