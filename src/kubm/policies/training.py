"""Training helpers shared by the learned policies: the learning-rate schedule and the
plateau test of a saved loss curve."""

from __future__ import annotations

import math

import numpy as np


def warmup_cosine(k: int, warmup: int, total: int, elapsed_s: float = 0.0, budget_s: float | None = None) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay over whichever runs out first,
    iterations or the time budget (a budget-stopped fit still ends at a low learning rate)."""
    if k < warmup:
        return (k + 1) / warmup
    progress = (k - warmup) / max(1, total - warmup)
    if budget_s:
        progress = max(progress, elapsed_s / budget_s)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def plateau(losses: list[float], tail: float = 0.2) -> dict:
    """Relative fall of the loss over the last ``tail`` of the iterations (smoothed over
    5 % windows at both ends): a plateau is a fall below 2 %."""
    n = len(losses)
    if n < 10:
        return {"relative_fall": None, "plateau": False}
    w = max(1, n // 20)
    start = int(n * (1 - tail))
    a = float(np.mean(losses[max(0, start - w // 2): start + w // 2 + 1]))
    b = float(np.mean(losses[-w:]))
    fall = (a - b) / a if a > 0 else 0.0
    return {"relative_fall": fall, "plateau": bool(fall < 0.02)}


def chunk_curves(*terms: str) -> dict:
    """The curves a chunk policy's fit saves: per-iteration loss (and ``terms``), time, and
    the held-out chunk error at every validation check."""
    return {"iteration": [], "loss": [], **{t: [] for t in terms}, "time_s": [], "stopped": "iterations",
            "val_iteration": [], "val_chunk_rms_rad": [], "val_mean_action_rms_rad": None}


def budget_reached(cfg, elapsed_s: float, it: int) -> bool:
    """The optional wall-clock cap ends the fit before its iteration count."""
    return cfg.time_budget_s is not None and elapsed_s >= cfg.time_budget_s and it < cfg.iterations


def validation_due(cfg, it: int, last: bool) -> bool:
    """A check every ``val_every`` iterations, and at the last one (however the fit stops)."""
    return bool(cfg.val_every) and (it % cfg.val_every == 0 or it == cfg.iterations or last)


def record_validation(curves: dict, it: int, errors: dict) -> None:
    curves["val_iteration"].append(it)
    curves["val_chunk_rms_rad"].append(errors["chunk_action_rms_rad"])
    curves["val_mean_action_rms_rad"] = errors["mean_action_rms_rad"]


def optimiser_step(model, loss, opt, *, method: str, key: str, seed: int, iteration: int,
                   clip: float | None = None, bar=None) -> float:
    """One gradient step on ``loss``; a non-finite loss stops the fit (FitDiverged, nothing
    saved; ``key`` is the method's config key for the hint). Returns the loss value."""
    import torch

    from kubm.policies.base import FitDiverged

    value = float(loss.detach())
    if not math.isfinite(value):
        if bar is not None:
            bar.close()
        raise FitDiverged(seed, iteration, f"loss is {value}", method=method,
                          hint=f"Lower fit.{key}.lr.")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return value


def end_iteration(curves: dict, cfg, it: int, value: float, elapsed: float, bar, validate=None) -> bool:
    """Record one iteration in ``curves`` (loss, time), score the held-out chunks with
    ``validate()`` when due, and return True when the time budget stops the fit."""
    curves["iteration"].append(it)
    curves["loss"].append(value)
    curves["time_s"].append(round(elapsed, 4))
    bar.update(1)
    if it % 20 == 0:
        bar.set_postfix(loss=f"{value:.4g}")
    budget_hit = budget_reached(cfg, elapsed, it)
    if validate is not None and validation_due(cfg, it, budget_hit):
        record_validation(curves, it, validate())
    if budget_hit:
        curves["stopped"] = f"time_budget_s after {it} iterations"
    return budget_hit
