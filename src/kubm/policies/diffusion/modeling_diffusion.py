"""Diffusion Policy baseline (Chi et al., RSS 2023), CNN variant, on flow features.

Observation o_t = [qpos_t ; φ_t ; c] (φ the unscaled flow latent), standardised with the
training mean/std; actions scaled to [−1, 1] with the training min/max. The model denoises
an action chunk A_t = a_t … a_{t+H−1} conditioned on the last ``n_obs_steps`` observations
(flattened, with the diffusion-step embedding, into one FiLM conditioning vector):

    ConditionalUnet1D: Conv1d residual blocks over time (GroupNorm, Mish), each modulated by
    FiLM (per-channel scale and bias from the conditioning); down-sampling by strided conv,
    skip connections, up-sampling by transposed conv.

Training (``fitting_diffusion.py``): DDPM forward process (``diffusers.DDPMScheduler``,
squared-cosine betas); the network predicts the clean chunk (x₀, default) or the noise (ε);
an EMA of the weights is what is saved. Inference: DDIM
(``diffusers.DDIMScheduler``, η = 0) with ``num_inference_steps`` steps from Gaussian noise
drawn from a generator re-seeded at every ``reset()``, so a rollout is reproducible.

Execution (``act``): observations are kept in a history of ``n_obs_steps`` (the first one
repeated at the start); when the queue of planned actions is empty, a chunk is predicted
and its first ``n_action_steps`` actions are queued. Actions are clipped to the training
action limits.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kubm.policies.base import TorchPolicyFiles
from kubm.policies.diffusion.configuration_diffusion import DiffusionConfig
from kubm.policies.features import (
    block_statistics,
    check_vector,
    policy_header,
)

METHOD = "diffusion"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------

class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        arg = t.float()[:, None] * freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ConvNormAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class FiLMResBlock(nn.Module):
    """Two conv blocks; the first one's output is modulated per channel by (1 + γ)·h + β from cond."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv1 = ConvNormAct(c_in, c_out, kernel, groups)
        self.conv2 = ConvNormAct(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        gamma, beta = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.conv2(h * (1 + gamma) + beta)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """(B, T, d_a) noisy chunk, (B,) diffusion step, (B, d_cond) → (B, T, d_a)."""

    def __init__(self, d_action: int, d_cond: int, down_dims: list[int], kernel: int, groups: int, step_dim: int):
        super().__init__()
        self.step_encoder = nn.Sequential(SinusoidalEmbedding(step_dim), nn.Linear(step_dim, 4 * step_dim), nn.Mish(),
                                          nn.Linear(4 * step_dim, step_dim))
        cond = step_dim + d_cond
        dims = [d_action, *down_dims]
        n = len(down_dims)
        self.down = nn.ModuleList()
        for i in range(n):
            last = i == n - 1
            self.down.append(nn.ModuleList([
                FiLMResBlock(dims[i], dims[i + 1], cond, kernel, groups),
                FiLMResBlock(dims[i + 1], dims[i + 1], cond, kernel, groups),
                nn.Identity() if last else nn.Conv1d(dims[i + 1], dims[i + 1], 3, stride=2, padding=1)]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([FiLMResBlock(mid, mid, cond, kernel, groups),
                                  FiLMResBlock(mid, mid, cond, kernel, groups)])
        self.up = nn.ModuleList()
        for i in reversed(range(1, n)):  # levels n-1 … 1: concatenate the skip, go to the width below
            self.up.append(nn.ModuleList([
                FiLMResBlock(2 * dims[i + 1], dims[i], cond, kernel, groups),
                FiLMResBlock(dims[i], dims[i], cond, kernel, groups),
                nn.ConvTranspose1d(dims[i], dims[i], 4, stride=2, padding=1)]))
        self.final = nn.Sequential(ConvNormAct(down_dims[0], down_dims[0], kernel, groups),
                                   nn.Conv1d(down_dims[0], d_action, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if timestep.ndim == 0:
            timestep = timestep.expand(sample.shape[0])
        c = torch.cat([self.step_encoder(timestep), cond], dim=-1)
        x = sample.transpose(1, 2)  # (B, d_a, T)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, c), c)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, c)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, c), c))
        return self.final(x).transpose(1, 2)


def make_schedulers(cfg: DiffusionConfig):
    """(DDPMScheduler for training, DDIMScheduler for inference) with the same betas."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, clip_sample=True,
                  prediction_type=cfg.prediction_type)
    return DDPMScheduler(variance_type="fixed_small", **common), DDIMScheduler(set_alpha_to_one=True, **common)


class DiffusionModel(nn.Module):
    """U-Net plus the normalisation statistics and action limits (buffers, saved with it)."""

    def __init__(self, config: DiffusionConfig, d_q: int, d_flow: int, d_c: int):
        super().__init__()
        self.config = config
        self.d_q, self.d_flow, self.d_c = int(d_q), int(d_flow), int(d_c)
        self.d_obs = self.d_q + self.d_flow + self.d_c
        self.register_buffer("obs_mean", torch.zeros(self.d_obs))
        self.register_buffer("obs_std", torch.ones(self.d_obs))
        self.register_buffer("action_min", -torch.ones(self.d_q))  # [-1, 1] scaling
        self.register_buffer("action_max", torch.ones(self.d_q))
        self.register_buffer("action_low", torch.full((self.d_q,), -math.inf))  # clip limits
        self.register_buffer("action_high", torch.full((self.d_q,), math.inf))
        self.unet = ConditionalUnet1D(self.d_q, config.n_obs_steps * self.d_obs, config.down_dims,
                                      config.kernel_size, config.n_groups, config.step_embed_dim)

    @torch.no_grad()
    def set_statistics(self, obs_rows: np.ndarray, action_rows: np.ndarray, action_low=None, action_high=None):
        mean, std = block_statistics(obs_rows, (self.d_q, self.d_flow, self.d_c))
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        a = np.asarray(action_rows, np.float64)
        lo, hi = a.min(axis=0), a.max(axis=0)
        span = hi - lo
        flat = span < 1e-6  # a joint that never moves: unit range centred on its value
        lo, hi = np.where(flat, lo - 1.0, lo), np.where(flat, hi + 1.0, hi)
        self.action_min.copy_(torch.as_tensor(lo, dtype=torch.float32))
        self.action_max.copy_(torch.as_tensor(hi, dtype=torch.float32))
        if action_low is not None:
            self.action_low.copy_(torch.as_tensor(action_low, dtype=torch.float32))
        if action_high is not None:
            self.action_high.copy_(torch.as_tensor(action_high, dtype=torch.float32))

    def normalise_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def normalise_action(self, a: torch.Tensor) -> torch.Tensor:
        return 2 * (a - self.action_min) / (self.action_max - self.action_min) - 1

    def denormalise_action(self, a: torch.Tensor) -> torch.Tensor:
        return (a + 1) / 2 * (self.action_max - self.action_min) + self.action_min

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, n_obs, d_obs) raw observations → (B, n_obs·d_obs) conditioning."""
        return self.normalise_obs(obs).flatten(1)

    def compute_loss(self, batch: dict, noise_scheduler, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, dict]:
        """batch: ``obs`` (B, n_obs, d_obs), ``action`` (B, H, d_q), raw. ε- (or sample-) MSE."""
        x0 = self.normalise_action(batch["action"])
        B = x0.shape[0]
        # drawn on the CPU generator and moved, so a GPU fit follows the CPU fit's random stream
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (B,), generator=generator).to(x0.device)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        pred = self.unet(noisy, t, self.condition(batch["obs"]))
        target = noise if self.config.prediction_type == "epsilon" else x0
        loss = nn.functional.mse_loss(pred, target)
        return loss, {"mse": float(loss.detach())}

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, scheduler, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, n_obs, d_obs) → (B, H, d_q) actions (denormalised, clipped to the action limits)."""
        cond = self.condition(obs)
        x = torch.randn((obs.shape[0], self.config.chunk_steps, self.d_q), generator=generator).to(obs.device)
        scheduler.set_timesteps(self.config.num_inference_steps)
        for t in scheduler.timesteps:
            out = self.unet(x, t, cond)
            x = scheduler.step(out, t, x).prev_sample
        a = self.denormalise_action(x.clamp(-1, 1))
        return torch.maximum(torch.minimum(a, self.action_high), self.action_low)


# ---------------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------------

class DiffusionPolicy(TorchPolicyFiles):
    """Receding-horizon execution of a trained Diffusion Policy: ``reset()``, ``act(features)``."""

    METHOD, FORMAT_VERSION, LABEL = METHOD, FORMAT_VERSION, "Diffusion Policy"
    OWN_KEYS = frozenset({"obs_layout", "weights"})
    MODEL_CLASS, CONFIG_CLASS = DiffusionModel, DiffusionConfig

    method = METHOD

    def __init__(self, model: DiffusionModel, *, task_id: str | None = None, config_hash: str | None = None,
                 feature_attrs: dict | None = None, seed: int | None = None, extra: dict | None = None):
        self._init_policy(model, task_id, config_hash, feature_attrs, seed, extra)
        _, self.scheduler = make_schedulers(model.config)
        self.reset()

    config = property(lambda self: self.model.config)
    n_obs_steps = property(lambda self: self.model.config.n_obs_steps)
    chunk_size = property(lambda self: self.model.config.chunk_steps)
    d_q = property(lambda self: self.model.d_q)
    d_flow = property(lambda self: self.model.d_flow)
    d_c = property(lambda self: self.model.d_c)

    def reset(self) -> None:
        """Start an episode: empty history and action queue, sampling noise re-seeded."""
        self._history: deque = deque(maxlen=self.config.n_obs_steps)
        self._queue: deque = deque()
        self._gen = torch.Generator().manual_seed(int(self.config.inference_seed))

    def observation(self, qpos, flow, context) -> np.ndarray:
        return np.concatenate([check_vector("qpos", qpos, self.d_q), check_vector("flow", flow, self.d_flow),
                               check_vector("context", context, self.d_c)])

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        """(n_obs, d_obs) raw observations (oldest first) → (chunk_steps, d_q) actions."""
        obs = torch.as_tensor(np.asarray(obs_history, np.float32))[None]
        return self.model.sample(obs, self.scheduler, self._gen)[0].numpy()

    def act(self, features: dict) -> np.ndarray:
        """features: ``qpos``, ``flow`` (current latent), ``context``, ``t``; returns a_t."""
        if features.get("t") == 0 and self._history:
            self.reset()
        o = self.observation(features["qpos"], features["flow"], features.get("context"))
        if not self._history:
            self._history.extend([o] * self.config.n_obs_steps)
        else:
            self._history.append(o)
        if not self._queue:
            chunk = self.predict_chunk(np.stack(self._history))
            self._queue.extend(chunk[: self.config.n_action_steps])
        return self._queue.popleft().astype(np.float32)

    # -- persistence ---------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {**policy_header(METHOD, FORMAT_VERSION, self, self.config.to_dict()),
                "obs_layout": "[qpos (d_q); flow latent (d_flow); context (d_c)], standardised",
                "weights": "EMA", **self.extra}
