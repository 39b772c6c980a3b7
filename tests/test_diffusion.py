"""Diffusion Policy baseline: U-Net shapes, overfitting a tiny dataset, act(), save/load, fit stage."""

import json

import numpy as np
import pytest
import torch
from test_fit import StandInAE, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies.registry import policy_class
from kubm.policies import IncompatibleError, load_policy
from kubm.policies.diffusion import ConditionalUnet1D, DiffusionConfig, DiffusionModel, DiffusionPolicy, train_diffusion
from kubm.policies.features import ChunkData, Episode
from kubm.stages.fit import fit

D_Q, D_FLOW, D_C = 2, 3, 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**kw) -> DiffusionConfig:
    base = dict(chunk_steps=4, n_obs_steps=1, n_action_steps=2, down_dims=[16, 32], n_groups=4, step_embed_dim=16,
                num_train_timesteps=50, num_inference_steps=10, iterations=400, batch_size=32, lr=3e-3,
                lr_warmup_steps=20, ema_decay=0.99)
    return DiffusionConfig(**{**base, **kw})


def tiny_episodes(n=2, T=10, seed=0):
    """Actions are a smooth, episode-specific function of time; observations identify (episode, t)."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        t = np.arange(T)[:, None]
        action = np.concatenate([np.sin(0.4 * t + i), np.cos(0.3 * t) * (1 + i)], 1) * 0.8
        qpos = np.vstack([action[:1] * 0.5, action[:-1]])
        flow = np.concatenate([t / T, np.full((T, 1), i), rng.normal(size=(1, 1)).repeat(T, 0)], 1)
        eps.append(Episode(action=action.astype(np.float32), qpos=qpos.astype(np.float32),
                           flow=flow.astype(np.float32), context=np.array([i - 0.5], np.float32), seed=i))
    return eps


def trained_policy(iterations=400, **kw):
    eps = tiny_episodes()
    data = ChunkData.from_episodes(eps)
    torch.manual_seed(0)
    model = DiffusionModel(tiny_config(iterations=iterations, **kw), D_Q, D_FLOW, D_C)
    lo, hi = data.action.min(0), data.action.max(0)
    model.set_statistics(data.obs, data.action, lo, hi)
    curves = train_diffusion(model, data, seed=0)
    return DiffusionPolicy(model, task_id="adroit/relocate", seed=0,
                           feature_attrs={"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C}), eps, curves


def test_unet_shapes_and_config_checks():
    net = ConditionalUnet1D(5, 7, [8, 16, 32], 3, 4, 8)
    out = net(torch.randn(3, 8, 5), torch.tensor([0, 5, 9]), torch.randn(3, 7))
    assert out.shape == (3, 8, 5)
    with pytest.raises(ValueError, match=r"chunk_steps=6 must be a multiple of 2\^\(len\(down_dims\)-1\) = 4"):
        DiffusionConfig(chunk_steps=6, down_dims=[8, 16, 32], n_groups=4)
    with pytest.raises(ValueError, match="n_action_steps=9 must be <= chunk_steps=8"):
        DiffusionConfig(chunk_steps=8, n_action_steps=9)
    with pytest.raises(ValueError, match=r"unknown Diffusion Policy config key\(s\) \['horizn'\]; known: .*'chunk_steps'"):
        DiffusionConfig.from_dict({"horizn": 8})
    assert DiffusionConfig.from_dict(DiffusionConfig().to_dict()) == DiffusionConfig()


def test_overfits_tiny_dataset_and_acts(tmp_path):
    # x0- ("sample") prediction overfits in few iterations; ε-prediction (the default) is
    # exercised by the fit-stage test
    policy, eps, curves = trained_policy(prediction_type="sample")
    assert len(curves["loss"]) == 400
    first, last = np.mean(curves["loss"][:30]), np.mean(curves["loss"][-30:])
    assert last < 0.3 * first, (first, last)
    # the predicted chunk at a training observation matches the training chunk
    data = ChunkData.from_episodes(eps)
    rows = np.array([0, 3, 12, 15])
    obs, act, _ = data.windows(rows, 1, 4)
    span = data.action.max(0) - data.action.min(0)
    for o, a in zip(obs, act):
        pred = policy.predict_chunk(o)
        assert pred.shape == (4, D_Q)
        assert np.abs(pred - a).max() < 0.1 * span.max(), (pred, a)
    # receding-horizon execution: a chunk every n_action_steps (2) steps
    ep = eps[1]
    policy.reset()
    got = np.stack([policy.act({"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t], "context": ep.context})
                    for t in range(len(ep))])
    assert got.shape == (len(ep), D_Q) and np.abs(got - ep.action).max() < 0.1 * span.max()

    # save / load: identical predictions (same EMA weights, same sampling noise after reset)
    policy.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["method"] == "diffusion" and meta["d_flow"] == D_FLOW and meta["config"]["chunk_steps"] == 4
    assert policy_class("diffusion") is DiffusionPolicy
    for loaded in (DiffusionPolicy.load(tmp_path / "m"), load_policy(tmp_path / "m")):
        loaded.reset()
        again = np.stack([loaded.act({"t": t, "qpos": ep.qpos[t], "flow": ep.flow[t], "context": ep.context})
                          for t in range(len(ep))])
        assert np.array_equal(again, got)
    with pytest.raises(IncompatibleError, match=r"d_flow=128 \(model: 3\)"):
        load_policy(tmp_path / "m", feature_attrs={"d_q": D_Q, "d_flow": 128, "d_c": D_C})
    with pytest.raises(ValueError, match="flow has 4 values, the model expects 3"):
        policy.act({"t": 0, "qpos": ep.qpos[0], "flow": np.zeros(4), "context": ep.context})


def test_fit_stage_diffusion(tmp_path):
    train = write_features(tmp_path / "train.zarr", n_eps=3, T=16)
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=16, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"]["diffusion"].update({"chunk_steps": 4, "n_action_steps": 2, "down_dims": [16, 32], "n_groups": 4,
                                       "step_embed_dim": 16, "iterations": 20, "batch_size": 8,
                                       "num_inference_steps": 4, "time_budget_s": None})
    task = resolve_task(config, "adroit", "relocate")
    out = tmp_path / "diffusion" / "seed0"
    summary = fit(task, config, "diffusion", 0, train, test, None, out, threads=1, progress=False, ae=StandInAE())
    assert summary["method"] == "diffusion" and summary["seed"] == 0 and summary["iterations"] == 20
    assert {"model.safetensors", "config.json", "curves.json", "loss.png"} <= {p.name for p in out.iterdir()}
    policy = load_policy(out, task_id="adroit/relocate")
    assert policy.config.chunk_steps == 4 and policy.seed == 0
