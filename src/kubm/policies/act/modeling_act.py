"""ACT baseline (Zhao et al., RSS 2023): a CVAE over action chunks with transformers, on flow
features instead of images.

Observation o_t = [qpos_t ; φ_t ; c] (standardised with training statistics); actions
standardised with the training mean/std. Tokens of the policy: [z ; qpos ; φ ; c], each a
linear projection to ``d_model`` plus a learned position embedding, into a transformer
encoder; a transformer decoder with ``chunk_size`` learned queries cross-attends to it and
a linear head gives the chunk â_t … â_{t+k−1}.

CVAE (training only): a transformer encoder over [CLS ; qpos ; a_t … a_{t+k−1}] (padded
actions past a demo's end masked) gives q(z | a, o) = N(μ, σ²) from the CLS output;
z ~ q by reparameterisation. Loss: L1 on unpadded actions + ``kl_weight`` · KL(q ‖ N(0, I)).
At inference z = 0 (the prior mean).

Execution (``act``): with ``temporal_agg`` a chunk is predicted every step and the action
for step t averages every stored prediction for t with weights exp(−k·i), i = 0 the oldest;
otherwise ``n_action_steps`` actions of each chunk are executed before predicting again.
Actions are clipped to the training action limits.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kubm.policies.base import TorchPolicyFiles
from kubm.policies.act.configuration_act import ActConfig
from kubm.policies.features import (
    block_statistics,
    check_vector,
    policy_header,
)

METHOD = "act"
FORMAT_VERSION = 1


def _encoder(cfg: ActConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.dim_feedforward, cfg.dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class ActModel(nn.Module):
    """CVAE encoder + transformer encoder–decoder, with statistics and limits as buffers."""

    def __init__(self, config: ActConfig, d_q: int, d_flow: int, d_c: int):
        super().__init__()
        self.config = cfg = config
        self.d_q, self.d_flow, self.d_c = int(d_q), int(d_flow), int(d_c)
        self.d_obs = self.d_q + self.d_flow + self.d_c
        d, k = cfg.d_model, cfg.chunk_size
        self.register_buffer("obs_mean", torch.zeros(self.d_obs))
        self.register_buffer("obs_std", torch.ones(self.d_obs))
        self.register_buffer("action_mean", torch.zeros(self.d_q))
        self.register_buffer("action_std", torch.ones(self.d_q))
        self.register_buffer("action_low", torch.full((self.d_q,), -math.inf))
        self.register_buffer("action_high", torch.full((self.d_q,), math.inf))
        # CVAE encoder
        self.vae_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.vae_qpos = nn.Linear(self.d_q, d)
        self.vae_action = nn.Linear(self.d_q, d)
        self.vae_pos = nn.Parameter(torch.randn(1, 2 + k, d) * 0.02)
        self.vae_encoder = _encoder(cfg, cfg.n_vae_encoder_layers)
        self.vae_out = nn.Linear(d, 2 * cfg.latent_dim)
        # policy
        self.latent_in = nn.Linear(cfg.latent_dim, d)
        self.qpos_in = nn.Linear(self.d_q, d)
        self.flow_in = nn.Linear(self.d_flow, d)
        self.context_in = nn.Linear(self.d_c, d) if self.d_c > 0 else None
        self.n_tokens = 3 + int(self.d_c > 0)
        self.token_pos = nn.Parameter(torch.randn(1, self.n_tokens, d) * 0.02)
        self.encoder = _encoder(cfg, cfg.n_encoder_layers)
        dec = nn.TransformerDecoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout, batch_first=True,
                                         norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, cfg.n_decoder_layers)
        self.queries = nn.Parameter(torch.randn(1, k, d) * 0.02)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, self.d_q))

    @torch.no_grad()
    def set_statistics(self, obs_rows: np.ndarray, action_rows: np.ndarray, action_low=None, action_high=None):
        mean, std = block_statistics(obs_rows, (self.d_q, self.d_flow, self.d_c))
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        amean, astd = block_statistics(action_rows, (self.d_q,))
        self.action_mean.copy_(torch.as_tensor(amean, dtype=torch.float32))
        self.action_std.copy_(torch.as_tensor(astd, dtype=torch.float32))
        if action_low is not None:
            self.action_low.copy_(torch.as_tensor(action_low, dtype=torch.float32))
        if action_high is not None:
            self.action_high.copy_(torch.as_tensor(action_high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor | None = None, pad: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """obs (B, d_obs) normalised; actions (B, k, d_q) normalised (training) or None (z = 0).
        Returns (chunk (B, k, d_q) normalised, μ, log σ²) (μ, log σ² None at inference)."""
        B = obs.shape[0]
        q = obs[:, : self.d_q]
        if actions is not None:
            tokens = torch.cat([self.vae_cls.expand(B, -1, -1), self.vae_qpos(q)[:, None], self.vae_action(actions)], 1)
            mask = None
            if pad is not None:
                mask = torch.cat([torch.zeros(B, 2, dtype=torch.bool, device=pad.device), pad], dim=1)
            h = self.vae_encoder(tokens + self.vae_pos, src_key_padding_mask=mask)
            mu, logvar = self.vae_out(h[:, 0]).chunk(2, dim=-1)
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)  # the CPU stream, on any device
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            mu = logvar = None
            z = torch.zeros(B, self.config.latent_dim, device=obs.device)
        toks = [self.latent_in(z), self.qpos_in(q), self.flow_in(obs[:, self.d_q: self.d_q + self.d_flow])]
        if self.context_in is not None:
            toks.append(self.context_in(obs[:, self.d_q + self.d_flow:]))
        memory = self.encoder(torch.stack(toks, dim=1) + self.token_pos)
        out = self.decoder(self.queries.expand(B, -1, -1), memory)
        return self.head(out), mu, logvar

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """batch: ``obs`` (B, n_obs, d_obs) raw (the last one is used), ``action`` (B, k, d_q) raw,
        ``pad`` (B, k) bool. L1 on unpadded actions + kl_weight · KL."""
        obs = (batch["obs"][:, -1] - self.obs_mean) / self.obs_std
        a = (batch["action"] - self.action_mean) / self.action_std
        pad = batch.get("pad")
        pad = torch.zeros(a.shape[:2], dtype=torch.bool, device=a.device) if pad is None else pad
        pred, mu, logvar = self(obs, a, pad, generator)
        valid = (~pad).unsqueeze(-1).to(a.dtype)
        l1 = ((pred - a).abs() * valid).sum() / (valid.sum() * self.d_q).clamp_min(1.0)
        kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).sum(-1).mean()
        loss = l1 + self.config.kl_weight * kl
        return loss, {"l1": float(l1.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def predict(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, d_obs) raw → (B, k, d_q) actions (z = 0, clipped to the action limits)."""
        pred, _, _ = self((obs - self.obs_mean) / self.obs_std)
        a = pred * self.action_std + self.action_mean
        return torch.maximum(torch.minimum(a, self.action_high), self.action_low)


class ActPolicy(TorchPolicyFiles):
    """Chunked execution of a trained ACT: ``reset()``, ``act(features)``, save / load."""

    METHOD, FORMAT_VERSION, LABEL = METHOD, FORMAT_VERSION, "ACT"
    OWN_KEYS = frozenset({"obs_layout"})
    MODEL_CLASS, CONFIG_CLASS = ActModel, ActConfig

    method = METHOD
    n_obs_steps = 1

    def __init__(self, model: ActModel, *, task_id: str | None = None, config_hash: str | None = None,
                 feature_attrs: dict | None = None, seed: int | None = None, extra: dict | None = None):
        self._init_policy(model, task_id, config_hash, feature_attrs, seed, extra)
        self.reset()

    config = property(lambda self: self.model.config)
    chunk_size = property(lambda self: self.model.config.chunk_size)
    d_q = property(lambda self: self.model.d_q)
    d_flow = property(lambda self: self.model.d_flow)
    d_c = property(lambda self: self.model.d_c)

    def reset(self) -> None:
        self._t = 0
        self._chunks: deque = deque()  # (start step, chunk) for temporal ensembling
        self._queue: deque = deque()

    def predict_chunk(self, obs_history: np.ndarray) -> np.ndarray:
        """(n_obs, d_obs) raw observations (the last is used) → (chunk_size, d_q) actions."""
        obs = torch.as_tensor(np.asarray(obs_history, np.float32).reshape(-1, self.model.d_obs)[-1:])
        return self.model.predict(obs)[0].numpy()

    def act(self, features: dict) -> np.ndarray:
        """features: ``qpos``, ``flow`` (current latent), ``context``, ``t``; returns a_t."""
        if features.get("t") == 0:
            self.reset()
        o = np.concatenate([check_vector("qpos", features["qpos"], self.d_q),
                            check_vector("flow", features["flow"], self.d_flow),
                            check_vector("context", features.get("context"), self.d_c)])
        t, k = self._t, self.chunk_size
        self._t += 1
        if not self.config.temporal_agg:
            if not self._queue:
                n = self.config.n_action_steps or k
                self._queue.extend(self.predict_chunk(o[None])[:n])
            return self._queue.popleft().astype(np.float32)
        self._chunks.append((t, self.predict_chunk(o[None])))
        while self._chunks and self._chunks[0][0] + k <= t:
            self._chunks.popleft()
        preds = np.stack([c[t - s] for s, c in self._chunks])  # oldest first
        w = np.exp(-self.config.ensemble_k * np.arange(len(preds)))
        return ((w[:, None] * preds).sum(0) / w.sum()).astype(np.float32)

    # -- persistence ---------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {**policy_header(METHOD, FORMAT_VERSION, self, self.config.to_dict()),
                "obs_layout": "[qpos (d_q); flow latent (d_flow); context (d_c)], standardised", **self.extra}
