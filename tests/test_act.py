"""ACT baseline: CVAE loss, overfitting a tiny dataset, temporal ensembling, save/load, fit stage."""

import json

import numpy as np
import pytest
import torch
from test_diffusion import D_C, D_FLOW, D_Q, tiny_episodes
from test_fit import StandInAE, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies.registry import policy_class
from kubm.policies import IncompatibleError, load_policy
from kubm.policies.act import ActConfig, ActModel, ActPolicy, train_act
from kubm.policies.features import ChunkData
from kubm.stages.fit import fit


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**kw) -> ActConfig:
    base = dict(chunk_size=4, d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1,
                dim_feedforward=64, dropout=0.0, latent_dim=4, kl_weight=1.0, iterations=300, batch_size=32, lr=2e-3)
    return ActConfig(**{**base, **kw})


def trained(**kw):
    eps = tiny_episodes()
    data = ChunkData.from_episodes(eps)
    torch.manual_seed(0)
    model = ActModel(tiny_config(**kw), D_Q, D_FLOW, D_C)
    model.set_statistics(data.obs, data.action, data.action.min(0), data.action.max(0))
    curves = train_act(model, data, seed=0)
    return ActPolicy(model, task_id="adroit/relocate", seed=0,
                     feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C}), eps, data, curves


def test_config_checks():
    with pytest.raises(ValueError, match=r"unknown ACT config key\(s\) \['chunk'\]; known: .*'chunk_size'"):
        ActConfig.from_dict({"chunk": 3})
    with pytest.raises(ValueError, match="d_model=30 must be a multiple of n_heads=4"):
        ActConfig(d_model=30)
    with pytest.raises(ValueError, match="n_action_steps=30 must be in"):
        ActConfig(chunk_size=20, n_action_steps=30)
    assert ActConfig.from_dict(ActConfig().to_dict()) == ActConfig()


def test_loss_masks_padding_and_has_kl():
    torch.manual_seed(0)
    m = ActModel(tiny_config(), D_Q, D_FLOW, D_C)
    obs, act = torch.randn(5, 1, D_Q + D_FLOW + D_C), torch.randn(5, 4, D_Q)
    pad = torch.zeros(5, 4, dtype=torch.bool)
    pad[:, 2:] = True
    loss, terms = m.compute_loss({"obs": obs, "action": act, "pad": pad}, torch.Generator().manual_seed(0))
    act2 = act.clone()
    act2[:, 2:] += 100.0  # padded targets must not matter for L1 (the CVAE encoder masks them too)
    loss2, terms2 = m.compute_loss({"obs": obs, "action": act2, "pad": pad}, torch.Generator().manual_seed(0))
    assert terms["l1"] == pytest.approx(terms2["l1"], rel=1e-5) and terms["kl"] >= 0
    assert float(loss.detach()) == pytest.approx(terms["l1"] + terms["kl"], rel=1e-5)


def test_overfits_tiny_dataset_and_ensembles(tmp_path):
    policy, eps, data, curves = trained()
    first, last = np.mean(curves["loss"][:20]), np.mean(curves["loss"][-20:])
    assert len(curves["loss"]) == 300 and last < 0.3 * first, (first, last)
    span = data.action.max(0) - data.action.min(0)
    obs, act, pad = data.windows(np.array([0, 3, 12, 15]), 1, 4)
    for o, a, p in zip(obs, act, pad):
        pred = policy.predict_chunk(o)
        assert pred.shape == (4, D_Q) and np.abs(pred - a)[~p].max() < 0.1 * span.max(), (pred, a)
    ep = eps[0]

    def run(p):
        p.reset()
        return np.stack([p.act({"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t], "context": ep.context})
                         for t in range(len(ep))])

    got = run(policy)
    assert np.abs(got - ep.action).max() < 0.1 * span.max()
    # temporal ensembling by hand: every chunk predicted at s ≤ t covering t, weights exp(-k i)
    chunks = [policy.predict_chunk(np.concatenate([ep.qpos[s], ep.flow[s], ep.context])[None]) for s in range(len(ep))]
    t = 5
    preds = np.stack([chunks[s][t - s] for s in range(t - 3, t + 1)])
    w = np.exp(-policy.config.ensemble_k * np.arange(4))
    np.testing.assert_allclose(got[t], (w[:, None] * preds).sum(0) / w.sum(), atol=1e-6)
    np.testing.assert_allclose(got[0], chunks[0][0], atol=1e-6)
    # without temporal_agg: n_action_steps of each chunk, open-loop
    policy.model.config.temporal_agg, policy.model.config.n_action_steps = False, 2
    chunked = run(policy)
    np.testing.assert_allclose(chunked[2:4], chunks[2][:2], atol=1e-6)
    policy.model.config.temporal_agg, policy.model.config.n_action_steps = True, None

    policy.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["method"] == "act" and meta["config"]["chunk_size"] == 4 and meta["d_c"] == D_C
    assert policy_class("act") is ActPolicy
    for loaded in (ActPolicy.load(tmp_path / "m"), load_policy(tmp_path / "m")):
        assert np.array_equal(run(loaded), got)
    with pytest.raises(IncompatibleError, match=r"d_c=0 \(model: 1\)"):
        load_policy(tmp_path / "m", feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": 0})
    with pytest.raises(ValueError, match="qpos has 3 values, the model expects 2"):
        policy.act({"t": 0, "qpos": np.zeros(3), "flow": ep.flow[0], "context": ep.context})


def test_fit_stage_act(tmp_path):
    train = write_features(tmp_path / "train.zarr", n_eps=3, T=16)
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=16, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["act"].update({"chunk_size": 4, "d_model": 16, "n_heads": 2, "n_encoder_layers": 1,
                                 "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "dim_feedforward": 32,
                                 "latent_dim": 4, "iterations": 20, "batch_size": 8, "time_budget_s": None})
    task = resolve_task(config, "adroit", "relocate")
    out = tmp_path / "act" / "seed2"
    summary = fit(task, config, "act", 2, train, test, None, out, threads=1, progress=False, ae=StandInAE())
    assert summary["method"] == "act" and summary["seed"] == 2 and summary["iterations"] == 20
    assert {"model.safetensors", "config.json", "curves.json", "loss.png", "diagnostics.json"} <= \
        {p.name for p in out.iterdir()}
    policy = load_policy(out, task_id="adroit/relocate")
    assert policy.config.chunk_size == 4 and policy.seed == 2


def test_fit_stage_holds_out_validation_demos_and_saves_the_curve(tmp_path):
    train = write_features(tmp_path / "train.zarr", n_eps=5, T=16)
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=16, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["act"].update({"chunk_size": 4, "d_model": 16, "n_heads": 2, "n_encoder_layers": 1,
                                 "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "dim_feedforward": 32,
                                 "latent_dim": 4, "iterations": 30, "batch_size": 8, "val_demos": 2, "val_every": 10})
    task = resolve_task(config, "adroit", "relocate")
    out = tmp_path / "act" / "seed0"
    summary = fit(task, config, "act", 0, train, test, None, out, threads=1, progress=False, ae=StandInAE())
    curves = json.loads((out / "curves.json").read_text())
    assert curves["val_iteration"] == [10, 20, 30] and len(curves["val_chunk_rms_rad"]) == 3
    assert curves["val_mean_action_rms_rad"] > 0 and "plateau" in curves
    meta = json.loads((out / "config.json").read_text())
    assert meta["trained"]["n_train_demos"] == 3 and meta["trained"]["n_val_demos"] == 2
    assert meta["trained"]["cpu_s"] > 0
    diag = json.loads((out / "diagnostics.json").read_text())
    # the last check is the saved model scored on the same held-out windows
    assert diag["chunk_errors_val"]["chunk_action_rms_rad"] == pytest.approx(curves["val_chunk_rms_rad"][-1])
    assert summary["val_ratio_to_mean_action"] == pytest.approx(diag["chunk_errors_val"]["ratio_to_mean_action"])
