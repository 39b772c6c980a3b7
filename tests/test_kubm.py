"""K-UBM model and policy: lift, K, loss, training, save/load, compatibility, replanning."""

import json

import numpy as np
import pytest
import torch

from kubm.policies.registry import policy_class
from kubm.policies import IncompatibleError, check_compatible, load_policy
from kubm.policies.features import Episode, episode_sequence, make_xi
from kubm.policies.base import FitDiverged
from kubm.policies.koopman import calibrate_replan_threshold
from kubm.policies.kubm import KubmConfig, KubmModel, KubmPolicy, train_kubm

D_Q, D_FLOW, D_C = 3, 5, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_config(**kw) -> KubmConfig:
    base = dict(d_psi=6, window_steps=4, hidden=[16], iterations=30, starts_per_demo=4, lr_g=3e-3, lr_K=3e-3)
    return KubmConfig(**{**base, **kw})


def rotation_decay() -> np.ndarray:
    """4-D block-diagonal rotation + decay; eigenvalues 0.97e^{±0.3i}, 0.9e^{±0.1i}."""
    def block(r, th):
        return r * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A = np.zeros((4, 4))
    A[:2, :2], A[2:, 2:] = block(0.97, 0.3), block(0.9, 0.1)
    return A


def linear_sequences(A, n=12, T=30, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=A.shape[0])
        seq = [x]
        for _ in range(T - 1):
            seq.append(A @ seq[-1])
        out.append(np.asarray(seq, np.float32))
    return out


def fake_model(config: KubmConfig, seed=0) -> KubmModel:
    torch.manual_seed(seed)
    m = KubmModel(config, D_Q, D_FLOW, D_C)
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(200, m.d_xi)) * rng.uniform(0.5, 3, m.d_xi) + rng.normal(size=m.d_xi)
    m.set_statistics(rows, s=2.0, action_low=np.full(D_Q, -10.0), action_high=np.full(D_Q, 10.0))
    return m


@pytest.mark.parametrize("normalize", ["standard", "scale", "none"])
def test_lift_is_state_inclusive(normalize):
    m = fake_model(small_config(normalize=normalize))
    xi = torch.randn(7, m.d_xi)
    z = m.lift(xi)
    assert z.shape == (7, m.d_xi + m.d_psi)
    assert torch.equal(z[:, : m.d_xi], m.normalise(xi))
    assert torch.allclose(m.denormalise(z[:, : m.d_xi]), xi, atol=1e-5)
    if normalize == "none":
        assert torch.equal(z[:, : m.d_xi], xi)


def test_identity_K_gives_constant_rollout():
    policy = KubmPolicy(fake_model(small_config()))
    assert np.array_equal(policy.K, np.eye(policy.d_z))
    qpos0, flow0, ctx = np.array([0.1, -0.2, 0.3]), np.linspace(-1, 1, D_FLOW), np.array([4.0, 5.0])
    plan = policy.plan(qpos0, flow0, ctx, T=50)
    assert plan.actions.shape == (50, D_Q) and plan.flow.shape == (50, D_FLOW)
    np.testing.assert_allclose(plan.actions, np.broadcast_to(qpos0, (50, D_Q)), atol=1e-5)
    np.testing.assert_allclose(plan.flow, np.broadcast_to(flow0, (50, D_FLOW)), atol=1e-5)
    assert np.ptp(plan.actions, axis=0).max() == 0  # exactly constant


def test_plan_is_clipped_to_joint_limits():
    m = fake_model(small_config())
    m.action_low.fill_(-0.05)
    m.action_high.fill_(0.05)
    plan = KubmPolicy(m).plan(np.array([1.0, -1.0, 0.0]), np.zeros(D_FLOW), np.zeros(D_C), T=3)
    assert plan.actions.max() <= 0.05 and plan.actions.min() >= -0.05


def test_loss_decreases_on_linear_system():
    A = rotation_decay()
    seqs = [np.concatenate([s, s[:, :2] ** 2 - 0.5, s[:, 2:3]], axis=1) for s in linear_sequences(A, n=8)]
    # d_q=3, d_flow=4 (x, x0² − .5, x1² − .5 ... a mildly nonlinear observable), d_c=0
    cfg = small_config(iterations=150, d_psi=8, window_steps=5)
    torch.manual_seed(0)
    m = KubmModel(cfg, 3, 4, 0)
    m.set_statistics(np.concatenate(seqs), s=1.0)
    curves = train_kubm(m, seqs, seed=0)
    assert len(curves["loss"]) == 150
    first, last = np.mean(curves["loss"][:10]), np.mean(curves["loss"][-10:])
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("dynamics", ["modal", "dense"])
def test_recovers_known_stable_linear_system_eigenvalues(dynamics):
    """d_ψ = 0: K alone must become the system matrix (up to the per-dim scaling), so its
    eigenvalues are the system's, and its rollouts reproduce held-out trajectories.
    normalize="scale" keeps the system linear (no centring)."""
    A = rotation_decay()
    seqs = linear_sequences(A, n=16, T=40, seed=1)
    cfg = KubmConfig(d_psi=0, window_steps=5, hidden=[], iterations=400, starts_per_demo=8, lr_K=3e-2,
                     clip_K=10.0, normalize="scale", dynamics=dynamics,
                     trajectory_weight=1.0 if dynamics == "modal" else 0.0, window_weight=1.0)
    m = KubmModel(cfg, 2, 2, 0)
    m.set_statistics(np.concatenate(seqs), s=1.0)
    train_kubm(m, seqs, seed=0)
    got = np.linalg.eigvals(m.K.detach().double().numpy())
    want = np.linalg.eigvals(A)
    err = max(np.abs(got - w).min() for w in want)
    assert err < 0.02, (sorted(got, key=np.angle), sorted(want, key=np.angle))
    # held-out initial states: 39-step rollouts match the true system
    policy = KubmPolicy(m)
    for x in linear_sequences(A, n=3, T=40, seed=9):
        z = policy.lift(x[0, :2], x[0, 2:], None)
        pred = policy.rollout(z, 39).actions
        assert np.abs(pred - x[1:, :2]).max() < 0.05


@pytest.mark.parametrize("dynamics", ["readout", "increment"])
def test_readout_forms_reproduce_a_known_stable_linear_system(dynamics):
    """The read-out forms have their own latent basis (the lift), so the check is on what
    the planner uses: rollouts from held-out initial states follow the true system."""
    A = rotation_decay()
    seqs = linear_sequences(A, n=24, T=40, seed=1)
    cfg = KubmConfig(d_psi=16, hidden=[], iterations=400, starts_per_demo=8, window_steps=10, lr_K=3e-2,
                     lr_g=3e-3, psi_weight=0.0, dynamics=dynamics, theta_init_max=1.0, lift_skip=True)
    torch.manual_seed(0)
    m = KubmModel(cfg, 2, 2, 0)
    m.set_statistics(np.concatenate(seqs), s=1.0)
    curves = train_kubm(m, seqs, seed=0)
    assert max(curves["rho"]) <= 1.0
    policy = KubmPolicy(m)
    scale = np.abs(np.concatenate(seqs)).max()
    errs = []
    for x in linear_sequences(A, n=4, T=40, seed=9):
        plan = policy.rollout(policy.lift(x[0, :2], x[0, 2:], None), 39)
        errs.append(np.abs(np.concatenate([plan.actions, plan.flow], 1) - x[1:]).max())
    assert max(errs) < 0.1 * scale, (errs, scale)


@pytest.mark.parametrize("carry", [False, True])
def test_readout_rollout_equals_powers_of_the_exported_dense_K(carry):
    from kubm.policies.kubm.fitting_kubm import ReadoutDynamics

    torch.manual_seed(0)
    for n in (6, 7):
        dyn = ReadoutDynamics(5, n, r_max=0.999, r_init=0.9, theta_max=1.0, carry=carry)
        with torch.no_grad():
            dyn.C.normal_()
            dyn.nu.uniform_(-3, 1)
        z0 = torch.randn(3, 5 + n)
        got = dyn.predict(z0, 30).double()
        K, z, want = dyn.dense(), z0.double(), []
        for _ in range(30):
            z = z @ K.T
            want.append(z)
        assert torch.allclose(got, torch.stack(want, 1), atol=1e-4)
        eig = np.abs(np.linalg.eigvals(K.numpy()))
        assert eig.max() <= 1.0 + 1e-9
        # the carried block has eigenvalue exactly 1 but no Jordan chain: powers stay bounded
        assert np.abs(np.linalg.matrix_power(K.numpy(), 5000)).max() < 1e3


def test_K_stays_inside_the_unit_disc_throughout_training():
    """An unstable system (ρ = 1.05): the modal form cannot follow it out of the unit disc."""
    A = rotation_decay() * (1.05 / 0.97)
    seqs = linear_sequences(A, n=8, T=30, seed=2)
    cfg = KubmConfig(d_psi=0, hidden=[], iterations=200, lr_K=3e-2, clip_K=10.0, normalize="scale",
                     window_steps=10, check_every=5, dynamics="modal", window_weight=0.3)
    m = KubmModel(cfg, 2, 2, 0)
    m.set_statistics(np.concatenate(seqs), s=1.0)
    curves = train_kubm(m, seqs, seed=0)
    assert len(curves["rho"]) >= 40
    assert max(curves["rho"]) < 1.0
    assert KubmPolicy(m).spectral_radius() < 1.0
    # the same data pulls a free dense K outside
    dense = KubmModel(KubmConfig(**{**cfg.to_dict(), "dynamics": "dense", "trajectory_weight": 0.0,
                                    "window_weight": 1.0}), 2, 2, 0)
    dense.set_statistics(np.concatenate(seqs), s=1.0)
    assert max(train_kubm(dense, seqs, seed=0)["rho"]) > 1.0
    # the default read-out form, with its closed-form C, stays inside as well
    ro = KubmModel(KubmConfig(d_psi=8, hidden=[16], iterations=100, lr_K=3e-2, check_every=5, resolve_every=10),
                   2, 2, 0)
    ro.set_statistics(np.concatenate(seqs), s=1.0)
    curves = train_kubm(ro, seqs, seed=0)
    assert max(curves["rho"]) < 1.0 and KubmPolicy(ro).spectral_radius() < 1.0


def test_modal_rollout_equals_powers_of_the_exported_dense_K():
    from kubm.policies.kubm.fitting_kubm import ModalDynamics

    torch.manual_seed(0)
    for d in (6, 7):  # even, and odd (one real mode)
        dyn = ModalDynamics(d, r_max=0.999, r_init=0.9)
        with torch.no_grad():
            dyn.P.add_(0.3 * torch.randn(d, d))
            dyn.theta.uniform_(-1, 1)
            dyn.nu.uniform_(-3, 1)
        z0 = torch.randn(4, d)
        got = dyn.predict(z0, 25).double()
        K, z, want = dyn.dense(), z0.double(), []
        for _ in range(25):
            z = z @ K.T
            want.append(z)
        assert torch.allclose(got, torch.stack(want, 1), atol=1e-4)
        assert dyn.spectral_radius() < 0.999
        assert np.abs(np.linalg.eigvals(K.numpy())).max() < 0.999 + 1e-9


def _fit_K(seed, iterations=12, **kw):
    seqs = linear_sequences(rotation_decay(), n=4, T=12)
    seqs = [np.concatenate([s[:, :3], s, s[:, :1], np.ones((len(s), 2), np.float32)], axis=1) for s in seqs]
    torch.manual_seed(seed)
    m = KubmModel(small_config(iterations=iterations, **kw), D_Q, D_FLOW, D_C)
    m.set_statistics(np.concatenate(seqs), 1.0)
    curves = train_kubm(m, seqs, seed=seed)
    return m.K.detach().clone(), curves


def test_fixed_iteration_fit_is_bitwise_reproducible():
    (k1, c1), (k2, c2), (k3, _) = _fit_K(5), _fit_K(5), _fit_K(6)
    assert torch.equal(k1, k2) and c1["loss"] == c2["loss"] and not torch.equal(k1, k3)
    assert c1["stopped"] == "iterations" and len(c1["loss"]) == 12
    kd, _ = _fit_K(5, dynamics="dense", trajectory_weight=0.0)
    assert torch.equal(kd, _fit_K(5, dynamics="dense", trajectory_weight=0.0)[0])


def test_full_trajectory_loss_beats_short_windows_in_open_loop():
    """A small synthetic task: a slow mode that 4-step windows barely see, and a nonlinear
    observable. The plan is read 60 steps out; training on the whole rollout fits that,
    training on short windows alone does not."""
    rng = np.random.default_rng(0)
    A = np.zeros((4, 4))
    A[:2, :2] = 0.995 * np.array([[np.cos(0.05), -np.sin(0.05)], [np.sin(0.05), np.cos(0.05)]])
    A[2:, 2:] = 0.9 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])

    def demos(n, seed):
        out = []
        for x in linear_sequences(A, n=n, T=61, seed=seed):
            obs = np.concatenate([x[:, :2] + 0.5 * x[:, 2:], np.tanh(x[:, :2])], axis=1)
            out.append(obs.astype(np.float32))
        return out

    train, test = demos(24, 3), demos(8, 4)
    errs = {}
    for name, kw in {"trajectory": dict(trajectory_weight=1.0, window_weight=0.3),
                     "windows": dict(trajectory_weight=0.0, window_weight=1.0)}.items():
        cfg = KubmConfig(d_psi=8, hidden=[32], iterations=250, window_steps=4, starts_per_demo=8, lr_g=3e-3,
                         lr_K=1e-2, **kw)
        torch.manual_seed(0)
        m = KubmModel(cfg, 2, 2, 0)
        m.set_statistics(np.concatenate(train), s=1.0)
        train_kubm(m, train, seed=0)
        policy = KubmPolicy(m)
        se = [((policy.rollout(policy.lift(x[0, :2], x[0, 2:], None), 60).actions - x[1:, :2]) ** 2).mean()
              for x in test]
        errs[name] = float(np.sqrt(np.mean(se)))
    assert errs["trajectory"] < 0.7 * errs["windows"], errs
    del rng


def test_plateau_measure():
    from kubm.policies.kubm import plateau

    assert plateau(list(np.linspace(2, 1, 100)))["plateau"] is False
    assert plateau(list(1 + np.exp(-np.arange(100) / 5.0)))["plateau"] is True


def test_exploding_training_raises_fit_diverged():
    seqs = linear_sequences(rotation_decay(), n=3, T=10)
    seqs = [np.concatenate([s, s], axis=1)[:, : D_Q + D_FLOW + D_C] for s in seqs]
    seqs = [np.pad(s, ((0, 0), (0, D_Q + D_FLOW + D_C - s.shape[1]))) for s in seqs]
    m = KubmModel(small_config(lr_K=1e6, clip_K=1e6, dynamics="dense", trajectory_weight=0.0), D_Q, D_FLOW, D_C)
    m.set_statistics(np.concatenate(seqs), 1.0)
    with pytest.raises(FitDiverged, match=r"seed 7, iteration 1\b") as err:
        train_kubm(m, seqs, seed=7)
    assert err.value.seed == 7 and err.value.iteration == 1
    # a NaN that reaches the loss
    bad = [s.copy() for s in seqs]
    for s in bad:
        s[:, 0] = np.nan
    m = KubmModel(small_config(), D_Q, D_FLOW, D_C)
    with pytest.raises(FitDiverged, match=r"seed 3, iteration 1\): loss is nan"):
        train_kubm(m, bad, seed=3)


def test_save_load_gives_identical_plan(tmp_path):
    seqs = linear_sequences(rotation_decay(), n=4, T=12)
    seqs = [np.pad(s, ((0, 0), (0, D_Q + D_FLOW + D_C - 4))) + 0.1 for s in seqs]
    torch.manual_seed(0)
    m = KubmModel(small_config(iterations=15), D_Q, D_FLOW, D_C)
    m.set_statistics(np.concatenate(seqs), 1.7, np.full(D_Q, -2.0), np.full(D_Q, 2.0))
    train_kubm(m, seqs, seed=0)
    policy = KubmPolicy(m, task_id="adroit/relocate", config_hash="abc", replan_threshold_px=3.5,
                        feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C, "ae": {"sha256": "f" * 64},
                                       "versions": {"x": 1}})
    args = (np.array([0.1, 0.2, 0.3]), np.linspace(0, 1, D_FLOW), np.array([0.5, -0.5]), 40)
    want = policy.plan(*args)
    policy.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["method"] == "kubm" and meta["scale_s"] == pytest.approx(1.7)
    assert meta["config"]["d_psi"] == 6 and meta["replan_threshold_px"] == 3.5
    assert "versions" not in meta["features"] and len(meta["normalisation"]["xi_mean"]) == policy.d_xi
    for loaded in (KubmPolicy.load(tmp_path / "m"), load_policy(tmp_path / "m")):
        got = loaded.plan(*args)
        assert np.array_equal(got.actions, want.actions) and np.array_equal(got.flow, want.flow)
        assert loaded.task_id == "adroit/relocate" and loaded.replan_threshold_px == 3.5
    assert policy_class("kubm") is KubmPolicy
    with pytest.raises(FileNotFoundError, match="not a saved"):
        load_policy(tmp_path / "nothing")


def test_incompatible_features_and_task_are_refused(tmp_path):
    policy = KubmPolicy(fake_model(small_config()), task_id="adroit/relocate",
                        feature_attrs={"ae": {"sha256": "a" * 64}})
    ok = {"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C, "suite": "adroit", "task": "relocate",
          "ae": {"sha256": "a" * 64}}
    check_compatible(policy, ok, "adroit/relocate")
    with pytest.raises(IncompatibleError, match=r"d_flow=128 \(model: 5\)"):
        check_compatible(policy, {**ok, "d_flow": 128})
    with pytest.raises(IncompatibleError, match=r"d_c=0 \(model: 2\)"):
        check_compatible(policy, {**ok, "d_c": 0})
    with pytest.raises(IncompatibleError, match="trained on task adroit/relocate, not adroit/door"):
        check_compatible(policy, ok, "adroit/door")
    with pytest.raises(IncompatibleError, match="from task adroit/door"):
        check_compatible(policy, {**ok, "task": "door"})
    with pytest.raises(IncompatibleError, match="flow AE"):
        check_compatible(policy, {**ok, "ae": {"sha256": "b" * 64}})
    policy.save(tmp_path / "m")
    with pytest.raises(IncompatibleError, match="not adroit/door"):
        load_policy(tmp_path / "m", task_id="adroit/door")
    with pytest.raises(ValueError, match="flow has 4 values, the model expects 5"):
        policy.plan(np.zeros(D_Q), np.zeros(4), np.zeros(D_C), 5)


class PointsAE:
    """Stand-in flow AE: latent → 256 points around a latent-dependent centre (px)."""

    def __init__(self, d_flow, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(d_flow, 2)) * 5
        self.base = rng.uniform(40, 80, size=(256, 2))

    def decode(self, latents):
        return self.base[None] + (np.asarray(latents) @ self.W)[:, None, :]


def test_replan_relifts_last_action_and_threshold_triggers():
    m = fake_model(small_config())
    with torch.no_grad():
        m.K.add_(0.01 * torch.randn_like(m.K))
    policy = KubmPolicy(m)
    rng = np.random.default_rng(0)
    eps = [Episode(action=rng.normal(size=(20, D_Q)).astype(np.float32),
                   qpos=rng.normal(size=(20, D_Q)).astype(np.float32),
                   flow=rng.normal(size=(20, D_FLOW)).astype(np.float32),
                   context=np.ones(D_C, np.float32), seed=i) for i in range(3)]
    # ξ_{-1} of a demo is [qpos_0; s φ_0; s c]
    assert np.allclose(episode_sequence(eps[0], 2.0)[0], make_xi(eps[0].qpos[0], eps[0].flow[0], eps[0].context, 2.0))
    ae = PointsAE(D_FLOW)
    calib = calibrate_replan_threshold(policy, eps, ae, horizon=5, starts_per_demo=4)
    policy.replan_threshold_px = calib["replan_threshold_px"]
    assert calib["n_distances"] > 0 and 0 < calib["replan_threshold_px"] <= calib["max_px"]
    last, flow_obs = eps[0].action[4], eps[0].flow[5]
    re = policy.replan(last, flow_obs, eps[0].context, T=10)
    ref = policy.rollout(policy.lift(last, flow_obs, eps[0].context), 10)
    assert np.array_equal(re.actions, ref.actions)
    assert not np.array_equal(re.actions, policy.replan(eps[0].qpos[5], flow_obs, eps[0].context, 10).actions)
    # the evaluator compares the divergence with the calibrated threshold of the plan's age
    from kubm.evaluation.rollout import PlanRunner

    runner = PlanRunner(policy)
    assert runner.can_replan and runner.threshold_now() == policy.replan_threshold_px
    policy.extra["replan_threshold_px_by_step"] = calib["replan_threshold_px_by_step"]
    runner = PlanRunner(policy)
    runner.start(eps[0].qpos[0], eps[0].flow[0], eps[0].context, 10)
    for t in range(3):
        runner.act(t, None, None)
    assert runner.threshold_now() == calib["replan_threshold_px_by_step"][3]
