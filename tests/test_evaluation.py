"""Evaluator: statistics, the replanning rule, the eval.json contract (real Adroit env, fake policy)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kubm.evaluation.metrics import centroid_divergence, latency_stats, mean_squared_jerk, wilson_interval
from kubm.evaluation.report import EvalDocumentError, validate_eval
from kubm.evaluation.rollout import run_episode

N_PTS = 16
D_FLOW = 4


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("k,n,lo,hi", [(0, 30, 0.0, 0.1135), (15, 30, 0.3315, 0.6685), (30, 30, 0.8865, 1.0),
                                       (7, 10, 0.3968, 0.8922)])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_jerk_of_polynomials():
    fps = 100.0
    t = np.arange(50) / fps
    quad = np.stack([3 * t**2 - t + 1, -2 * t**2], 1)
    assert mean_squared_jerk(quad, fps) == pytest.approx(0.0, abs=1e-6)
    c = 2.0
    cubic = np.stack([c * t**3 + t**2, -c * t**3], 1)  # jerk = ±6c everywhere
    assert mean_squared_jerk(cubic, fps) == pytest.approx(36 * c**2, rel=1e-6)
    assert np.isnan(mean_squared_jerk(cubic[:3], fps))


def test_latency_stats_in_ms():
    s = latency_stats([0.001] * 19 + [0.011])
    assert s["median"] == pytest.approx(1.0) and s["p95"] == pytest.approx(1.5)
    assert latency_stats([]) == {"median": None, "p95": None}


def test_centroid_divergence_uses_the_same_visible_points():
    obs = np.array([[0.0, 0.0], [10.0, 0.0]])
    pred = np.array([[0.0, 3.0], [50.0, 50.0]])
    assert centroid_divergence(obs, np.array([True, False]), pred) == pytest.approx(3.0)
    assert np.isnan(centroid_divergence(obs, np.array([False, False]), pred))


# ----------------------------------------------------------------------------- fakes
class FakeAE:
    """Latent = [cx, cy, 0, 0]; decode puts every point on the centroid."""

    latent_dim = D_FLOW
    n_points = N_PTS

    def encode(self, points, visible):
        pts = np.asarray(points, np.float64)
        out = np.zeros((len(pts), D_FLOW), np.float32)
        out[:, :2] = pts.mean(1)
        return out

    def decode(self, latent):
        latent = np.asarray(latent, np.float32)
        return np.repeat(latent[:, None, :2], N_PTS, axis=1)


class HoldPolicy:
    """Plans to hold the initial pose; predicts the object stays where it started.

    follow_observed: a replan predicts the observed flow from then on (divergence vanishes);
    otherwise replans keep the original prediction.
    """

    method = "fake"
    d_q, d_flow, d_c = 30, D_FLOW, 2  # as on adroit/relocate (read by kubm.policies.check_compatible)

    def __init__(self, threshold=5.0, follow_observed=True):
        self.replan_threshold_px = threshold
        self.follow_observed = follow_observed
        self.replans = []
        self.flow0 = None

    def plan(self, qpos0, flow0, context, T):
        self.flow0 = np.asarray(flow0, np.float32)
        return dataclasses.make_dataclass("P", ["actions", "flow"])(np.tile(qpos0, (T, 1)), np.tile(flow0, (T, 1)))

    def replan(self, last_action, flow_obs, context, T):
        self.replans.append((np.asarray(last_action), T))
        flow = flow_obs if self.follow_observed else self.flow0
        return dataclasses.make_dataclass("P", ["actions", "flow"])(np.tile(last_action, (T, 1)), np.tile(flow, (T, 1)))


class ActPolicy:
    method = "fake_act"

    def __init__(self):
        self.calls = 0

    def reset(self):
        self.calls = 0

    def act(self, features):
        assert features["flow"].shape == (D_FLOW,) and features["context"].shape == (2,)
        self.calls += 1
        return features["qpos"]


@dataclasses.dataclass
class FakeObs:
    qpos: np.ndarray
    rgb: np.ndarray
    seg: np.ndarray | None = None


class FakeEnv:
    """A joint-position integrator with a 2-DoF 'hand'; success when q[0] > 0.5."""

    fps = 10.0
    horizon = 30
    task = "fake"

    def reset(self, seed):
        self.t, self.q = 0, np.zeros(2, np.float32)
        return self._obs()

    def step(self, action):
        self.t += 1
        self.q = np.asarray(action, np.float32)
        return self._obs()

    def _obs(self):
        return FakeObs(self.q.copy(), np.zeros((32, 32, 3), np.uint8))

    def success(self):
        return bool(self.q[0] > 0.5)

    def joint_limits(self):
        return np.array([[-1, 1], [-1, 1]], np.float32)


class FakePerception:
    """Object points around (10, 10); from step `move_at` on they sit `shift` px to the right."""

    def __init__(self, move_at=10, shift=0.0):
        self.move_at, self.shift = move_at, shift

    def _pts(self, t):
        off = self.shift if t >= self.move_at else 0.0
        xy = np.full((N_PTS, 2), 10.0, np.float32) + np.linspace(-2, 2, N_PTS, dtype=np.float32)[:, None]
        xy[:, 0] += off
        return xy, np.ones(N_PTS, bool)

    def start(self, env, obs, seed):
        xy, vis = self._pts(0)
        return np.ones((32, 32), bool), xy, vis

    def update(self, env, obs):
        return self._pts(env.t)


def _ctx(rgb, seg):
    return np.array([0.1, 0.2], np.float32)


def _run(policy, perception, **kw):
    return run_episode(FakeEnv(), policy, FakeAE(), perception, seed=1, context_fn=_ctx, **kw)


# ----------------------------------------------------------------------------- replanning
def test_replans_on_injected_divergence_only():
    calm = _run(HoldPolicy(), FakePerception(shift=0.0))
    assert calm.replans == 0 and np.nanmax(calm.divergence) == pytest.approx(0.0, abs=1e-5)

    policy = HoldPolicy(threshold=5.0, follow_observed=True)
    moved = _run(policy, FakePerception(move_at=10, shift=20.0))
    assert moved.replans == 1  # the new plan predicts the observed flow: divergence is gone
    (t,) = np.flatnonzero(moved.replanned)
    # divergence[t] is measured after step t, on observation t + 1
    assert t == 9 and moved.divergence[t] > 5.0 and np.all(moved.divergence[:9] < 5.0)
    last_action, T_left = policy.replans[0]
    assert T_left == FakeEnv.horizon - t - 1
    np.testing.assert_allclose(last_action, moved.actions[t])

    off = _run(HoldPolicy(), FakePerception(move_at=10, shift=20.0), replan=False)
    assert off.replans == 0 and np.nanmax(off.divergence) > 5.0


def test_min_replan_interval_spaces_replans():
    res = _run(HoldPolicy(threshold=5.0, follow_observed=False), FakePerception(move_at=5, shift=20.0),
               min_replan_interval=4)
    steps = np.flatnonzero(res.replanned)
    assert len(steps) >= 3 and np.all(np.diff(steps) >= 4)


def test_no_threshold_means_no_replanning():
    res = _run(HoldPolicy(threshold=None), FakePerception(move_at=5, shift=20.0))
    assert res.replans == 0


def test_act_policy_runs_through_the_same_loop():
    policy = ActPolicy()
    res = _run(policy, FakePerception(move_at=5, shift=20.0))
    assert policy.calls == FakeEnv.horizon and res.steps == FakeEnv.horizon
    assert res.replans == 0 and np.isnan(res.divergence).all()


def test_real_kubm_policy_through_the_loop(tmp_path):
    """A saved, untrained K-UBM (K = I: the plan holds ξ_{-1}) loaded with load_policy replans
    once on the injected divergence, like HoldPolicy(follow_observed=True)."""
    pytest.importorskip("kubm.policies.kubm")
    from kubm.policies import load_policy
    from kubm.policies.kubm import KubmConfig, KubmModel, KubmPolicy

    model = KubmModel(KubmConfig(d_psi=4, hidden=[8]), d_q=2, d_flow=D_FLOW, d_c=2)
    KubmPolicy(model, task_id="fake/fake", replan_threshold_px=5.0, seed=0).save(tmp_path / "seed0")
    policy = load_policy(tmp_path / "seed0")
    res = _run(policy, FakePerception(move_at=10, shift=20.0))
    assert res.replans == 1 and np.flatnonzero(res.replanned).tolist() == [9]
    assert _run(policy, FakePerception(shift=0.0)).replans == 0


def test_episode_record_and_timing():
    res = _run(HoldPolicy(), FakePerception(), record_video=True)
    assert res.actions.shape == (FakeEnv.horizon, 2) and not res.success
    assert res.smoothness == pytest.approx(0.0) and res.policy_s > 0 and res.perception_s > 0
    assert len(res.frames) == FakeEnv.horizon + 1


# ----------------------------------------------------------------------------- stage on Adroit
def _write_features(path: Path, suite="adroit", task="relocate", d_q=30, d_flow=D_FLOW, d_c=2):
    from kubm.storage.episode_store import ArraySpec, EpisodeWriter

    specs = [ArraySpec("flow", (d_flow,), "float32"), ArraySpec("qpos", (d_q,), "float32"),
             ArraySpec("action", (d_q,), "float32"), ArraySpec("context", (d_c,), "float32")]
    with EpisodeWriter(path, producer="encode", data=specs, meta={"seed": "int64"},
                       attrs={"suite": suite, "task": task}, overwrite=True) as w:
        w.append_episode({"flow": np.zeros((5, d_flow), np.float32), "qpos": np.zeros((5, d_q), np.float32),
                          "action": np.zeros((5, d_q), np.float32), "context": np.zeros((5, d_c), np.float32)},
                         {"seed": 100000})
        w.finish()
    return path


class AdroitAE(FakeAE):
    """As FakeAE, for the 256 tracked points of the evaluator."""

    n_points = 256

    def decode(self, latent):
        latent = np.asarray(latent, np.float32)
        return np.repeat(latent[:, None, :2], 256, axis=1)


def _model_dir(root: Path, method="fake", seed=0, task="adroit/relocate", d_q=30) -> Path:
    d = root / "models" / method / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"method": method, "seed": seed, "task": task, "d_q": d_q,
                                               "d_flow": D_FLOW, "d_c": 2}))
    return d


@pytest.fixture(scope="module")
def adroit_eval(tmp_path_factory):
    from kubm.config import load_config, resolve_task
    from kubm.stages.evaluate import evaluate

    root = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("eval")
    config = load_config([root / "config/config.yaml"])
    config["evaluate"].update(episodes=2, videos=1, replan=True, min_replan_interval=3)
    task = resolve_task(config, "adroit", "relocate")
    task = dataclasses.replace(task, settings={**task.settings, "horizon": 12})
    feats = _write_features(tmp / "features.zarr")
    models = [_model_dir(tmp, seed=0), _model_dir(tmp, seed=1)]
    out = tmp / "results" / "eval.json"
    doc = evaluate(task, config, models, tmp / "ae", feats, out, progress=False,
                   load_policy=lambda d: HoldPolicy(threshold=0.5, follow_observed=False),
                   load_ae=lambda d: AdroitAE(), context_fn=_ctx)
    return doc, out, (task, config, models, tmp, feats)


def test_stage_writes_a_valid_eval_json(adroit_eval):
    doc, out, _ = adroit_eval
    on_disk = json.loads(out.read_text())
    assert on_disk == doc
    validate_eval(on_disk)
    assert on_disk["protocol"]["test_seeds"] == [100000, 100001] and on_disk["protocol"]["horizon"] == 12
    m = on_disk["methods"]["fake"]
    assert [p["seed"] for p in m["per_seed"]] == [0, 1] and len(m["per_episode"]) == 4
    assert all(e["steps"] == 12 for e in m["per_episode"])
    assert m["latency_ms"]["policy"]["median"] > 0
    assert on_disk["artifacts"]["videos"] == ["videos/fake_seed0_ep100000.mp4"]
    for rel in on_disk["artifacts"]["videos"] + on_disk["artifacts"]["plots"]:
        assert (out.parent / rel).stat().st_size > 0
    assert not list(out.parent.glob(".eval.json.*"))  # no temp file left behind
    # replanning's ablation: the same models and seeds executed open loop
    ol = m["open_loop"]
    assert ol["episodes"] == 4 and 0 <= ol["successes"] <= 4
    assert ol["success_rate"] == pytest.approx(ol["successes"] / 4)


def test_broken_documents_are_rejected(adroit_eval):
    doc, _, _ = adroit_eval
    missing = copy.deepcopy(doc)
    del missing["methods"]["fake"]["ci95"]
    with pytest.raises(EvalDocumentError, match="ci95"):
        validate_eval(missing)
    wrong = copy.deepcopy(doc)
    wrong["methods"]["fake"]["per_episode"][0]["success"] = "yes"
    with pytest.raises(EvalDocumentError, match="per_episode.0.success"):
        validate_eval(wrong)
    nan = copy.deepcopy(doc)
    nan["methods"]["fake"]["replans_mean"] = float("nan")
    with pytest.raises(EvalDocumentError):
        validate_eval(nan)
    extra = copy.deepcopy(doc)
    extra["succes_rate"] = 1.0
    with pytest.raises(EvalDocumentError, match="succes_rate"):
        validate_eval(extra)


def test_mismatched_inputs_are_clear_errors(adroit_eval, tmp_path):
    from kubm.stages.evaluate import CompatibilityError, evaluate

    _, _, (task, config, models, tmp, feats) = adroit_eval
    kw = dict(progress=False, load_policy=lambda d: HoldPolicy(), load_ae=lambda d: AdroitAE(), context_fn=_ctx)
    door = _write_features(tmp_path / "door.zarr", task="door")
    with pytest.raises(CompatibilityError, match="adroit/door, not adroit/relocate"):
        evaluate(task, config, models, tmp / "ae", door, tmp_path / "e.json", **kw)
    other_task = _model_dir(tmp_path, task="adroit/door")
    with pytest.raises(CompatibilityError, match="trained on adroit/door"):
        evaluate(task, config, [other_task], tmp / "ae", feats, tmp_path / "e.json", **kw)
    wide = _write_features(tmp_path / "wide.zarr", d_q=28)
    with pytest.raises(CompatibilityError, match="d_q=28"):  # kubm.policies.check_compatible
        evaluate(task, config, models, tmp / "ae", wide, tmp_path / "e.json", **kw)
    kw["load_policy"] = lambda d: ActPolicy()  # no dims of its own: config.json is compared
    with pytest.raises(CompatibilityError, match="d_q=30 but the feature store"):
        evaluate(task, config, models, tmp / "ae", wide, tmp_path / "e.json", **kw)
    assert not (tmp_path / "e.json").exists()


# ----------------------------------------------------------------------------- CLI
def test_cli_takes_model_lists_in_both_forms(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import kubm.stages.evaluate as stage
    from kubm.cli import app

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    seen = []

    def fake(task, config, models, ae, test, out, *, progress, workers, perturbed=False):
        seen.append([str(m) for m in models])
        assert workers == 1  # the default
        return {"methods": {"fake": {"success_rate": 0.5, "std": 0.0, "ci95": [0.1, 0.9], "replans_mean": 1.0}}}

    monkeypatch.setattr(stage, "evaluate", fake)
    runner = CliRunner()
    common = ["--ae", "ae", "--test", "t.zarr", "--out", str(tmp_path / "e.json"), "--no-progress"]
    res = runner.invoke(app, ["evaluate", "adroit/relocate", "--models", "m/seed0", "m/seed1", "m/seed2", *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "adroit/relocate", "--models", "m/seed0", "--models", "m/seed1", *common])
    assert res.exit_code == 0, res.output
    assert seen == [["m/seed0", "m/seed1", "m/seed2"], ["m/seed0", "m/seed1"]]
    assert "success 50%" in res.output
    res = runner.invoke(app, ["evaluate", "adroit/relocate", "--models", "m/seed0", "--tset", "x", *common])
    assert res.exit_code == 2


def test_cli_missing_features_is_a_clear_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from kubm.cli import app

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    (tmp_path / "m").mkdir()
    res = CliRunner().invoke(app, ["evaluate", "adroit/relocate", "--models", str(tmp_path / "m"), "--ae",
                                   str(tmp_path), "--test", str(tmp_path / "nope.zarr"), "--out",
                                   str(tmp_path / "e.json"), "--no-progress"])
    assert res.exit_code == 2 and "no such store" in res.output
    assert not (tmp_path / "e.json").exists()


def test_identical_models_are_rolled_out_once(adroit_eval, tmp_path):
    """Closed-form methods fit the same weights for every training seed: the evaluator rolls
    such twins out once and reuses the (deterministic) episodes."""
    from kubm.stages.evaluate import evaluate

    _, _, (task, config, _, tmp, feats) = adroit_eval
    models = [_model_dir(tmp_path, method="twin", seed=k) for k in range(3)]
    for k, m in enumerate(models):
        (m / "model.safetensors").write_bytes(b"same" if k < 2 else b"different")
    calls = []

    def load(d):
        calls.append(Path(d).name)
        return HoldPolicy(threshold=0.5, follow_observed=False)

    runs = []
    import kubm.evaluation.episodes as stage

    real = stage.run_episode

    def counting(*a, **kw):
        runs.append(1)
        return real(*a, **kw)

    stage.run_episode = counting
    try:
        doc = evaluate(task, config, models, tmp / "ae", feats, tmp_path / "e.json", progress=False,
                       load_policy=load, load_ae=lambda d: AdroitAE(), context_fn=_ctx)
    finally:
        stage.run_episode = real
    m = doc["methods"]["twin"]
    assert len(runs) == 2 * 2  # seeds 0 and 2 rolled out, 2 episodes each; seed 1 reused seed 0's
    assert m["identical_to"] == {"1": 0}
    from kubm.evaluation.metrics import wilson_interval

    k = sum(e["success"] for e in m["per_episode"] if e["train_seed"] != 1)
    assert m["ci95"] == pytest.approx(list(wilson_interval(k, 4)))  # the reused episodes are not counted
    assert len(m["per_episode"]) == 6 and [p["seed"] for p in m["per_seed"]] == [0, 1, 2]
