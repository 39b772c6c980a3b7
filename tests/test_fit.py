"""The fit stage end to end on a tiny synthetic feature store, with a stand-in flow AE."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kubm.cli import app
from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies import check_compatible, load_policy
from kubm.policies.features import FeatureError, IncompatibleError, compute_scale, load_features
from kubm.stages.fit import FitDiverged, FitError, fit
from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter

D_Q, D_FLOW, D_C = 3, 6, 2
AE_SHA = "c" * 64


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class StandInAE:
    """Duck-typed FlowAE: decode(latent [T, d_flow]) -> points_px [T, 256, 2]."""

    def __init__(self, d_flow=D_FLOW):
        rng = np.random.default_rng(123)
        self.W = rng.normal(size=(d_flow, 2)) * 4.0
        self.base = rng.uniform(30, 90, size=(256, 2))

    def decode(self, latents):
        return self.base[None] + (np.asarray(latents, np.float64) @ self.W)[:, None, :]


def write_features(path, *, n_eps=5, T=24, seed=0, task="relocate", nan=False, d_flow=D_FLOW):
    """An `encode`-style store: a hidden linear system drives actions and flow; a per-episode
    goal (context) pulls the state."""
    rng = np.random.default_rng(seed)
    th = 0.15
    A = 0.95 * np.array([[np.cos(th), -np.sin(th), 0, 0], [np.sin(th), np.cos(th), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    Ca, Cf = rng.normal(size=(D_Q, 4)) * 0.3, rng.normal(size=(d_flow, 4))
    attrs = {"d_q": D_Q, "d_flow": d_flow, "d_c": D_C, "width": 128, "height": 128, "task": task,
             "suite": "adroit", "config_hash": "0123456789abcdef", "ae": {"dir": "models/x/flow_ae", "sha256": AE_SHA}}
    data = [ArraySpec("flow", (d_flow,), "float32"), ArraySpec("qpos", (D_Q,), "float32"),
            ArraySpec("action", (D_Q,), "float32"), ArraySpec("context", (D_C,), "float32")]
    with EpisodeWriter(path, producer="encode", data=data, meta={"seed": "int64"}, attrs=attrs) as w:
        for e in range(n_eps):
            goal = rng.uniform(-1, 1, D_C)
            x = np.concatenate([rng.normal(size=2), goal])
            xs = [x]
            for _ in range(T - 1):
                xs.append(A @ xs[-1])
            xs = np.asarray(xs)
            action = xs @ Ca.T
            flow = xs @ Cf.T
            if nan and e == 1:
                flow[3, 0] = np.nan
            qpos = np.vstack([action[:1] - 0.2, action[:-1]])
            w.append_episode({"flow": flow.astype(np.float32), "qpos": qpos.astype(np.float32),
                              "action": action.astype(np.float32),
                              "context": np.tile(goal, (T, 1)).astype(np.float32)}, {"seed": seed * 100 + e})
        w.finish()
    return path


@pytest.fixture
def stores(tmp_path):
    return write_features(tmp_path / "train.zarr"), write_features(tmp_path / "test.zarr", n_eps=2, seed=1)


def setup(**kubm):
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["kubm"].update({"d_psi": 8, "hidden": [16], "window_steps": 5, "iterations": 60,
                                  "starts_per_demo": 6, "lr_K": 3e-3, "lr_g": 3e-3, **kubm})
    return resolve_task(config, "adroit", "relocate"), config


def test_features_load_and_scale(stores):
    fs = load_features(stores[0])
    assert fs.dims() == {"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C} and fs.task_id == "adroit/relocate"
    assert len(fs.episodes) == 5 and fs.episodes[0].context.shape == (D_C,)
    a = np.concatenate([e.action for e in fs.episodes])
    f = np.concatenate([e.flow for e in fs.episodes])
    assert compute_scale(fs) == pytest.approx(np.linalg.norm(a, axis=1).mean() / np.linalg.norm(f, axis=1).mean(),
                                              rel=1e-5)


def test_fit_end_to_end(stores, tmp_path):
    task, config = setup()
    out = tmp_path / "models" / "seed0"
    summary = fit(task, config, "kubm", 0, stores[0], stores[1], None, out, threads=1, progress=False,
                  ae=StandInAE())
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "curves.json", "loss.png", "diagnostics.json", "eigs.png",
            "openloop.png"} <= names
    assert not out.with_name("seed0.partial").exists()
    curves = json.loads((out / "curves.json").read_text())
    assert len(curves["loss"]) == 60 and curves["loss"][-1] < curves["loss"][0]
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["spectral_radius"] == pytest.approx(summary["spectral_radius"])
    assert len(diag["eigenvalues"]) == D_Q + D_FLOW + D_C + 8
    ol = diag["openloop_test"]
    assert len(ol["action_rms_rad"]) == 24 and len(ol["centroid_px"]) == 24 and ol["n_demos"] == 2
    policy = load_policy(out, task_id="adroit/relocate", feature_attrs=EpisodeStore.open(stores[1]).attrs)
    assert policy.replan_threshold_px == pytest.approx(diag["replan_calibration"]["replan_threshold_px"])
    assert policy.replan_threshold_px > 0 and policy.seed == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["task"] == "adroit/relocate" and meta["config_hash"] == task.hash()
    assert meta["features"]["ae"]["sha256"] == AE_SHA and meta["scale_s"] == pytest.approx(summary["scale_s"])
    ep = load_features(stores[1]).episodes[0]
    plan = policy.plan(ep.qpos[0], ep.flow[0], ep.context, 24)
    assert plan.actions.shape == (24, D_Q) and np.isfinite(plan.actions).all()
    # an identical refit is bit-identical (deterministic by seed)
    out2 = tmp_path / "models" / "again"
    fit(task, config, "kubm", 0, stores[0], stores[1], None, out2, threads=1, progress=False, ae=StandInAE())
    assert (out2 / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_diverging_fit_saves_nothing(stores, tmp_path):
    task, config = setup(lr_K=1e6, clip_K=1e6, lr_g=1e6)
    out = tmp_path / "seed3"
    with pytest.raises(FitDiverged, match=r"seed 3, iteration \d+\)"):
        fit(task, config, "kubm", 3, stores[0], stores[1], None, out, threads=1, progress=False, ae=StandInAE())
    assert not out.exists() and not out.with_name("seed3.partial").exists()


def test_nan_features_are_refused(tmp_path, stores):
    bad = write_features(tmp_path / "bad.zarr", nan=True)
    task, config = setup()
    with pytest.raises(FeatureError, match=r"data/flow has non-finite values in 1 rows \(episodes \[1\]\)"):
        fit(task, config, "kubm", 0, bad, stores[1], None, tmp_path / "o", threads=1, progress=False, ae=StandInAE())
    assert not (tmp_path / "o").exists()


def test_mismatched_inputs_are_refused(tmp_path, stores):
    task, config = setup()
    door = write_features(tmp_path / "door.zarr", task="door")
    with pytest.raises(FitError, match="features of task adroit/door, but fitting adroit/relocate"):
        fit(task, config, "kubm", 0, door, stores[1], None, tmp_path / "o", threads=1, progress=False, ae=StandInAE())
    other = write_features(tmp_path / "d4.zarr", d_flow=4)
    with pytest.raises(FitError, match="differ in dims"):
        fit(task, config, "kubm", 0, stores[0], other, None, tmp_path / "o", threads=1, progress=False, ae=StandInAE())
    with pytest.raises(FitError, match="unknown method 'nope'"):
        fit(task, config, "nope", 0, stores[0], stores[1], None, tmp_path / "o", threads=1, progress=False)
    assert not (tmp_path / "o").exists()


def test_model_refuses_other_features(tmp_path, stores):
    task, config = setup(iterations=5)
    out = tmp_path / "m"
    fit(task, config, "kubm", 0, stores[0], stores[1], None, out, threads=1, progress=False, ae=StandInAE())
    other = write_features(tmp_path / "d4.zarr", d_flow=4)
    with pytest.raises(ValueError, match=r"d_flow=4 \(model: 6\)"):
        load_policy(out, feature_attrs=EpisodeStore.open(other).attrs)
    with pytest.raises(ValueError, match="trained on task adroit/relocate, not adroit/door"):
        check_compatible(load_policy(out), None, "adroit/door")


def test_cli_fit_without_flow_ae_fails_cleanly(tmp_path, stores, root, monkeypatch):
    monkeypatch.chdir(root)
    out = tmp_path / "seed0"
    res = CliRunner().invoke(app, ["fit", "adroit/relocate", "--method", "kubm", "--seed", "0",
                                   "--train", str(stores[0]), "--test", str(stores[1]),
                                   "--ae", str(tmp_path / "no_ae"), "--out", str(out), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "flow autoencoder" in res.output
    assert not out.exists()


def test_openloop_report_covers_every_fitted_method(stores, tmp_path):
    """The diagnostic of `kubm openloop`: held-out open-loop action RMS per method and seed,
    per step and pooled, and it refuses models of another task."""
    from kubm.evaluation.openloop import openloop_report

    task, config = setup()
    dirs = []
    for method in ("kubm", "regression"):
        d = tmp_path / "models" / method / "seed0"
        fit(task, config, method, 0, stores[0], stores[1], None, d, threads=1, progress=False, ae=StandInAE())
        dirs.append(d)
    doc = openloop_report(dirs, stores[1], task_id="adroit/relocate")
    assert set(doc["methods"]) == {"kubm", "regression"} and doc["n_test_demos"] == 2
    for entry in doc["methods"].values():
        pooled = entry["pooled"]
        assert len(pooled["action_rms_rad_per_step"]) == 24 and pooled["action_rms_rad"] > 0
        assert set(entry["seeds"]) == {"seed0"}
    diag = json.loads((dirs[0] / "diagnostics.json").read_text())
    assert doc["methods"]["kubm"]["pooled"]["action_rms_rad"] == pytest.approx(
        diag["openloop_test"]["action_rms_rad_overall"], rel=1e-5)
    with pytest.raises(IncompatibleError):
        openloop_report(dirs, stores[1], task_id="adroit/door")
