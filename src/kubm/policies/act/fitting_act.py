"""Training recipe of the ACT baseline: AdamW at a constant learning rate (as the reference),
gradient clipping, an iteration count. Every ``val_every`` iterations the chunk predicted
with z = 0 on fixed windows of held-out training-seed demos is scored against the demo
actions, beside always predicting the training-mean action."""

from __future__ import annotations

import time

import numpy as np
import torch

from kubm.policies.act.modeling_act import ActModel, ActPolicy
from kubm.policies.chunk_fitting import fit_chunk_policy
from kubm.policies.devices import model_device
from kubm.policies.features import ChunkData, chunk_errors
from kubm.policies.training import chunk_curves, end_iteration, optimiser_step, plateau

__all__ = ["fit", "predicted_chunk_errors", "train_act"]


def predicted_chunk_errors(model: ActModel, data: ChunkData, mean_action: np.ndarray, max_windows: int = 64) -> dict:
    """``chunk_errors`` of the chunks ACT predicts at inference (z = 0, no dropout)."""
    was_training = model.training
    model.eval()

    device = model_device(model)

    def predict(obs):
        return model.predict(torch.as_tensor(obs[:, -1], dtype=torch.float32, device=device)).cpu().numpy()

    try:
        return chunk_errors(predict, data, 1, model.config.chunk_size, mean_action, max_windows)
    finally:
        model.train(was_training)


def train_act(model: ActModel, data: ChunkData, *, seed: int, val: ChunkData | None = None, progress: bool = False,
              desc: str = "fit act") -> dict:
    """Returns curves: iteration, loss, l1, kl, time_s, stopped, plateau, and with ``val`` the
    held-out chunk RMS (val_iteration, val_chunk_rms_rad, val_mean_action_rms_rad). Raises
    FitDiverged on a non-finite loss."""
    from tqdm import tqdm

    cfg = model.config
    torch.manual_seed(seed)  # dropout
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    mean_action = data.action.mean(axis=0)
    validate = None if val is None else (lambda: predicted_chunk_errors(model, val, mean_action))
    curves = chunk_curves("l1", "kl")
    device = model_device(model)
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.iterations, desc=desc, unit="it", disable=not progress, mininterval=1.0)
    for it in range(1, cfg.iterations + 1):
        obs, act, pad = data.sample(rng, cfg.batch_size, 1, cfg.chunk_size)
        loss, terms = model.compute_loss({"obs": torch.from_numpy(obs).to(device), "action": torch.from_numpy(act).to(device),
                                          "pad": torch.from_numpy(pad).to(device)}, gen)
        value = optimiser_step(model, loss, opt, method="ACT", key="act", seed=seed, iteration=it, clip=cfg.grad_clip, bar=bar)
        elapsed = time.perf_counter() - t0
        curves["l1"].append(terms["l1"])
        curves["kl"].append(terms["kl"])
        if end_iteration(curves, cfg, it, value, elapsed, bar, validate):
            break
    bar.close()
    model.eval()
    curves["plateau"] = plateau(curves["loss"])
    return curves


def fit(cfg, inputs, out):
    """ACT on a task's features (the flow AE is not used)."""
    return fit_chunk_policy("act", cfg, inputs, out, model_cls=ActModel, policy_cls=ActPolicy, train_fn=train_act,
                            chunk_errors_fn=predicted_chunk_errors)
