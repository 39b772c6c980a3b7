"""Training recipe of the Diffusion Policy baseline.

DDPM forward process (``diffusers.DDPMScheduler``); the U-Net predicts either the clean
chunk x₀ (``prediction_type: sample``, the default here) or the noise ε (the reference's
choice); MSE; AdamW with linear warm-up and cosine decay to an iteration count; an EMA of
the weights (warm-up ``min(decay, (1+k)/(10+k))``) is what is evaluated and saved.

Why x₀ by default: the reference U-Net never concatenates its finest level's skip, so at full
time resolution the output is rebuilt from the level below, ``down_dims[0] × chunk_steps/2``
numbers. To predict ε the network must pass white noise of ``chunk_steps × d_action`` numbers
through that: with the CPU-sized widths (32 channels, 16 steps, 30 joints: 256 < 480) it
cannot, and the ε-loss stalls near 0.4–0.9 at every noise level, even where ε ≈ x_t. A
clean action chunk is smooth and compressible, so x₀-prediction fits at the same width
(README, Diffusion Policy; ``benchmarks/chunk_policy_validation.py``).

Validation: every ``val_every`` iterations, chunks are sampled with the EMA weights (fixed
noise seed) on fixed windows of demos held out from the training seeds, and their action
RMS is recorded beside that of always predicting the training-mean action.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from kubm.policies.chunk_fitting import fit_chunk_policy
from kubm.policies.devices import model_device
from kubm.policies.diffusion.modeling_diffusion import DiffusionModel, DiffusionPolicy, make_schedulers
from kubm.policies.features import ChunkData, chunk_errors
from kubm.policies.training import (
    chunk_curves,
    end_iteration,
    optimiser_step,
    plateau,
    warmup_cosine,
)

__all__ = ["EMA", "denoising_errors", "fit", "sampled_chunk_errors", "train_diffusion"]

VAL_SAMPLING_SEED = 0  # noise of the validation samples: the same at every check


class EMA:
    """Exponential moving average of parameters, decay min(max_decay, (1+k)/(10+k)) at step k."""

    def __init__(self, params, max_decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.max_decay, self.step = float(max_decay), 0

    @torch.no_grad()
    def update(self) -> None:
        self.step += 1
        d = min(self.max_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)

    @contextlib.contextmanager
    def applied(self):
        """The EMA weights inside the block, the training weights after it."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for s, p in zip(saved, self.params):
                    p.copy_(s)


def sampled_chunk_errors(model: DiffusionModel, data: ChunkData, mean_action: np.ndarray,
                         max_windows: int = 64) -> dict:
    """``chunk_errors`` of DDIM-sampled chunks (noise seeded with VAL_SAMPLING_SEED)."""
    _, ddim = make_schedulers(model.config)
    gen = torch.Generator().manual_seed(VAL_SAMPLING_SEED)
    was_training = model.training
    model.eval()

    device = model_device(model)

    def predict(obs):
        return model.sample(torch.as_tensor(obs, dtype=torch.float32, device=device), ddim, gen).cpu().numpy()

    try:
        return chunk_errors(predict, data, model.config.n_obs_steps, model.config.chunk_steps, mean_action, max_windows)
    finally:
        model.train(was_training)


@torch.no_grad()
def denoising_errors(model: DiffusionModel, data: ChunkData, steps=None, n_windows: int = 256,
                     seed: int = 0) -> dict[int, float]:
    """ε-MSE (normalised action units) at diffusion steps ``steps`` on ``n_windows`` sampled
    windows of ``data``. For x₀-prediction, ε is implied: (x_t − √ᾱ·x̂₀)/√(1−ᾱ). A network that
    cannot pass its input through shows up here at large t, where ε ≈ x_t."""
    cfg = model.config
    sched, _ = make_schedulers(cfg)
    T = cfg.num_train_timesteps
    steps = list(steps) if steps is not None else sorted({0, T // 10, T // 2, int(0.9 * T), T - 1})
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    obs, act, _ = data.sample(rng, n_windows, cfg.n_obs_steps, cfg.chunk_steps)
    x0 = model.normalise_action(torch.from_numpy(act))
    cond = model.condition(torch.from_numpy(obs))
    out = {}
    for t in steps:
        noise = torch.randn(x0.shape, generator=gen)
        tt = torch.full((x0.shape[0],), int(t))
        xt = sched.add_noise(x0, noise, tt)
        pred = model.unet(xt, tt, cond)
        if cfg.prediction_type == "sample":
            ab = sched.alphas_cumprod[int(t)]
            pred = (xt - ab.sqrt() * pred) / (1 - ab).sqrt()
        out[int(t)] = float(((pred - noise) ** 2).mean())
    return out


def train_diffusion(model: DiffusionModel, data: ChunkData, *, seed: int, val: ChunkData | None = None,
                    progress: bool = False, desc: str = "fit diffusion") -> dict:
    """Train the U-Net on windows of ``data``; leaves the EMA weights in ``model``. Returns
    curves: iteration, loss, time_s, stopped, plateau, and with ``val`` the held-out chunk
    RMS (val_iteration, val_chunk_rms_rad, val_mean_action_rms_rad). Raises FitDiverged
    on a non-finite loss."""
    from tqdm import tqdm

    cfg = model.config
    noise_sched, _ = make_schedulers(cfg)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    params = list(model.unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr * warmup_cosine(0, cfg.lr_warmup_steps, cfg.iterations),
                            betas=(0.95, 0.999), weight_decay=cfg.weight_decay, foreach=True)
    ema = EMA(params, cfg.ema_decay)
    mean_action = data.action.mean(axis=0)

    def validate():
        with ema.applied():  # the weights that are saved
            return sampled_chunk_errors(model, val, mean_action)

    curves = chunk_curves()
    device = model_device(model)
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.iterations, desc=desc, unit="it", disable=not progress, mininterval=1.0)
    for it in range(1, cfg.iterations + 1):
        obs, act, _ = data.sample(rng, cfg.batch_size, cfg.n_obs_steps, cfg.chunk_steps)
        loss, _ = model.compute_loss({"obs": torch.from_numpy(obs).to(device), "action": torch.from_numpy(act).to(device)},
                                     noise_sched, gen)
        value = optimiser_step(model, loss, opt, method="Diffusion Policy", key="diffusion", seed=seed, iteration=it, bar=bar)
        ema.update()
        elapsed = time.perf_counter() - t0
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(it, cfg.lr_warmup_steps, cfg.iterations, elapsed, cfg.time_budget_s)
        if end_iteration(curves, cfg, it, value, elapsed, bar, None if val is None else validate):
            break
    bar.close()
    ema.copy_to()
    model.eval()
    curves["plateau"] = plateau(curves["loss"])
    return curves


def fit(cfg, inputs, out):
    """Diffusion Policy on a task's features (the flow AE is not used)."""
    return fit_chunk_policy("diffusion", cfg, inputs, out, model_cls=DiffusionModel, policy_cls=DiffusionPolicy,
                            train_fn=train_diffusion, chunk_errors_fn=sampled_chunk_errors,
                            extra_diagnostics=lambda model, data, seed: {
                                "eps_mse_by_step": denoising_errors(model, data, seed=seed)})
