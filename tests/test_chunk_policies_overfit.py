"""Defect-class tests of the neural baselines: with the default architecture and recipe at a
realistic action size, each must be able to memorise one demonstration.

Diffusion Policy with ε-prediction at the CPU-sized U-Net widths failed both checks (the
ε-loss stalled near 0.4–0.9 at every diffusion step, chunks further from the demo than the
mean action): a network that cannot pass its input through, not a small budget."""

import numpy as np
import pytest
import torch

from kubm.policies.act import ActConfig, ActModel, predicted_chunk_errors, train_act
from kubm.policies.diffusion import (
    DiffusionConfig,
    DiffusionModel,
    denoising_errors,
    sampled_chunk_errors,
    train_diffusion,
)
from kubm.policies.features import ChunkData, Episode

T, D_Q, D_FLOW, D_C = 48, 24, 16, 3  # an Adroit-sized hand (pen: 24 joints)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_demo() -> ChunkData:
    """A smooth demo with a reach-like transient; observations change with t."""
    t = np.arange(T)[:, None]
    k = np.arange(D_Q)[None]
    action = 0.6 * np.sin(0.08 * t * (1 + k / D_Q) + k) + 0.2 * np.tanh((t - 20) / 5.0) * np.cos(k)
    qpos = np.vstack([action[:1], action[:-1]])
    rng = np.random.default_rng(0)
    flow = np.tanh(rng.normal(size=(D_FLOW,)) + 0.05 * t * rng.normal(size=(1, D_FLOW)))
    ep = Episode(action=action.astype(np.float32), qpos=qpos.astype(np.float32), flow=flow.astype(np.float32),
                 context=np.array([0.1, -0.2, 0.3], np.float32), seed=0)
    return ChunkData.from_episodes([ep])


@pytest.mark.slow
def test_diffusion_memorises_one_demo_with_default_architecture():
    data = one_demo()
    cfg = DiffusionConfig(iterations=1200, batch_size=32, val_every=0)  # default widths and prediction type
    torch.manual_seed(0)
    model = DiffusionModel(cfg, D_Q, D_FLOW, D_C)
    model.set_statistics(data.obs, data.action)
    train_diffusion(model, data, seed=0)
    eps = denoising_errors(model, data)
    high = {t: v for t, v in eps.items() if t >= 0.9 * cfg.num_train_timesteps}
    assert high and max(high.values()) < 0.05, eps  # at large t, ε ≈ x_t: the input must pass through
    err = sampled_chunk_errors(model, data, data.action.mean(axis=0))
    assert err["chunk_action_rms_rad"] < 0.02, err


@pytest.mark.slow
def test_act_memorises_one_demo_with_default_architecture():
    data = one_demo()
    cfg = ActConfig(iterations=600, batch_size=32, val_every=0)
    torch.manual_seed(0)
    model = ActModel(cfg, D_Q, D_FLOW, D_C)
    model.set_statistics(data.obs, data.action)
    train_act(model, data, seed=0)
    err = predicted_chunk_errors(model, data, data.action.mean(axis=0))
    assert err["chunk_action_rms_rad"] < 0.02, err
