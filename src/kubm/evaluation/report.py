"""eval.json assembly, its schema check and atomic write, and the flow-error plot."""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from kubm.evaluation.metrics import latency_stats, wilson_interval
from kubm.evaluation.rollout import EpisodeResult
from kubm.errors import DataError

__all__ = [
    "CURVE_BINS",
    "EvalDocumentError",
    "divergence_curve",
    "eval_schema",
    "method_summary",
    "plot_flow_error",
    "read_documents",
    "validate_eval",
    "write_eval",
]

STATISTICS = {
    "success_rate": "mean over training seeds of each seed's success rate",
    "std": "population standard deviation (ddof=0) of the per-training-seed success rates",
    "ci95": "Wilson score interval (z=1.96) over all episodes of all training seeds pooled",
    "latency_ms.policy": "per episode: time in policy calls (plan, replans, per-step action read or act) / "
                         "steps; median and p95 over episodes",
    "latency_ms.perception": "per episode: time in segmentation, tracking, context and flow AE "
                             "encode/decode / steps; median and p95 over episodes",
    "smoothness.mean_squared_jerk": "third difference of the executed actions x fps^3, squared, mean over "
                                    "time and joints; mean over episodes",
    "divergence": "pixel distance between the observed and the decoded predicted centroid of the "
                  "points visible now (kubm.evaluation.metrics.centroid_divergence)",
    "divergence_curve": "per episode: mean divergence in 20 equal bins of normalised time (null: no prediction)",
}


class EvalDocumentError(DataError):
    """An eval.json document does not match src/kubm/schemas/eval.schema.json."""


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


CURVE_BINS = 20  # the divergence curve of an episode: means over 20 equal bins of normalised time


def divergence_curve(divergence: np.ndarray, bins: int = CURVE_BINS) -> list[float | None] | None:
    """Mean predicted-vs-observed divergence (px) in ``bins`` equal bins of normalised time
    (None for a bin with no prediction); None when the episode had no prediction at all."""
    d = np.asarray(divergence, float)
    if not np.isfinite(d).any():
        return None
    out = []
    for chunk in np.array_split(d, bins):
        ok = chunk[np.isfinite(chunk)]
        out.append(float(ok.mean()) if ok.size else None)
    return out


def method_summary(results: Sequence[tuple[int, EpisodeResult]], *, replan_threshold_px: float | None = None,
                   models: Sequence[str] = (), perturbed: bool = False) -> dict:
    """One method's entry of eval.json from (training seed, episode) pairs. ``perturbed``
    adds each episode's perturbation step and context-triggered replans."""
    if not results:
        raise ValueError("no episodes to summarise")
    by_seed: dict[int, list[EpisodeResult]] = {}
    for train_seed, ep in results:
        by_seed.setdefault(int(train_seed), []).append(ep)
    per_seed = [{"seed": s, "success_rate": float(np.mean([e.success for e in eps])), "n": len(eps)}
                for s, eps in sorted(by_seed.items())]
    rates = np.array([p["success_rate"] for p in per_seed])
    k = sum(int(e.success) for _, e in results)
    n = len(results)
    lo, hi = wilson_interval(k, n)
    jerks = [e.smoothness for _, e in results if math.isfinite(e.smoothness)]
    per_episode = [{
        "train_seed": int(s), "seed": e.seed, "success": bool(e.success), "steps": int(e.steps),
        "replans": int(e.replans), "wall_s": float(e.wall_s),
        "replan_steps": [int(t) for t in np.flatnonzero(e.replanned)],
        "policy_ms_per_step": e.policy_step_s * 1e3, "perception_ms_per_step": e.perception_step_s * 1e3,
        "mean_squared_jerk": _num(e.smoothness),
        "final_divergence_px": _num(e.divergence[np.isfinite(e.divergence)][-1]) if np.isfinite(e.divergence).any() else None,
        "divergence_curve": divergence_curve(e.divergence),
        **({"perturbed_at": e.perturbed_at, "context_replans": int(e.context_replans)} if perturbed else {}),
    } for s, e in results]
    return {
        "success_rate": float(rates.mean()),
        "std": float(rates.std()),
        "ci95": [float(lo), float(hi)],
        "per_seed": per_seed,
        "per_episode": per_episode,
        "latency_ms": {
            "policy": latency_stats([e.policy_step_s for _, e in results]),
            "perception": latency_stats([e.perception_step_s for _, e in results]),
        },
        "smoothness": {"mean_squared_jerk": float(np.mean(jerks)) if jerks else None},
        "replans_mean": float(np.mean([e.replans for _, e in results])),
        "replan_threshold_px": _num(replan_threshold_px),
        "models": [str(m) for m in models],
    }


def read_documents(paths: Sequence[Path], *, missing: str, corrupt: str, error: type[Exception] = DataError,
                   missing_error: type[Exception] | None = None) -> list[tuple[Path, dict]]:
    """(path, parsed JSON) of each file; a missing one raises ``missing_error`` (default
    ``error``), an unreadable one ``error``, with the hint ``missing`` / ``corrupt`` (formatted
    with ``p``, the path, and ``e``, the reason). Every path is checked before any is read."""
    for p in map(Path, paths):
        if not p.is_file():
            raise (missing_error or error)(missing.format(p=p))
    docs = []
    for p in map(Path, paths):
        try:
            docs.append((p, json.loads(p.read_text())))
        except json.JSONDecodeError as e:
            raise error(corrupt.format(p=p, e=e)) from e
    return docs


# Fields of eval.json that measure time and so differ between runs of the same config; the
# rest must reproduce exactly (the smoke tests and benchmarks/newcomer.py compare without them).
TIMING_FIELDS = frozenset({"wall_s", "train_wall_s", "train_cpu_s", "latency_ms", "policy_ms_per_step", "perception_ms_per_step"})


def without_fields(doc, fields=TIMING_FIELDS):
    """`doc` with every key in `fields` dropped, at any depth."""
    if isinstance(doc, dict):
        return {k: without_fields(v, fields) for k, v in doc.items() if k not in fields}
    if isinstance(doc, list):
        return [without_fields(v, fields) for v in doc]
    return doc


def eval_schema() -> dict:
    return json.loads(resources.files("kubm").joinpath("schemas/eval.schema.json").read_text())


def validate_eval(doc: dict) -> None:
    """Raise EvalDocumentError listing every violation (path: message)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(eval_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '<top level>'}: {e.message}" for e in errors]
        raise EvalDocumentError("eval.json does not match schemas/eval.schema.json:\n  " + "\n  ".join(lines))
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError as e:
        raise EvalDocumentError(f"eval.json holds a NaN or infinity (write null instead): {e}") from e


def write_eval(doc: dict, path: Path) -> Path:
    """Validate, then write atomically (temp file in the same folder, then rename)."""
    validate_eval(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_flow_error(results: Sequence[tuple[int, EpisodeResult]], path: Path, *, method: str,
                    threshold_px: float | None = None) -> Path:
    """Predicted-vs-observed centroid divergence over time: mean ± std over episodes,
    successful and failed episodes separately; replans marked, threshold drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    any_data = False
    for label, want, colour in (("successful", True, "tab:green"), ("failed", False, "tab:red")):
        eps = [e for _, e in results if e.success == want]
        if not eps:
            continue
        T = max(len(e.divergence) for e in eps)
        d = np.full((len(eps), T), np.nan)
        for i, e in enumerate(eps):
            d[i, : len(e.divergence)] = e.divergence
        if not np.isfinite(d).any():
            continue
        any_data = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mean, std = np.nanmean(d, 0), np.nanstd(d, 0)
        t = np.arange(1, T + 1)
        ax.plot(t, mean, color=colour, label=f"{label} (n={len(eps)})")
        ax.fill_between(t, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        for e in eps:
            steps = np.flatnonzero(e.replanned)
            ax.plot(steps + 1, e.divergence[steps], "x", color=colour, alpha=0.5, markersize=4)
    if threshold_px is not None and any_data:
        ax.axhline(threshold_px, color="k", linestyle="--", linewidth=1, label=f"replan threshold {threshold_px:.1f} px")
    if not any_data:
        ax.text(0.5, 0.5, f"{method}: no predicted flow to compare", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("centroid divergence (px)")
    ax.set_title(f"{method}: observed vs predicted object flow (x = replan)")
    if any_data:
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
