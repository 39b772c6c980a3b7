"""Cross-task comparison: ``results/summary.{md,json}`` and plots from the tasks' eval.json.

Per task and method: success (mean over training seeds) with the pooled Wilson 95 %
interval, the paired difference against K-UBM on the shared test seeds, and per-step policy
latency with its ratio to K-UBM's.

Pairing: the unit is the test seed (one initial condition). For each method a test seed's
outcome is its success averaged over training seeds; the difference to K-UBM is taken per
test seed, and its mean gets a normal-approximation 95 % interval (mean ± 1.96·sd/√n).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kubm.evaluation.metrics import distinct_wilson_interval
from kubm.evaluation.report import validate_eval

__all__ = ["REFERENCE", "build_summary", "render_markdown", "write_summary"]

REFERENCE = "kubm"


def _per_test_seed(entry: dict) -> dict[int, float]:
    by_seed: dict[int, list[bool]] = {}
    for ep in entry["per_episode"]:
        by_seed.setdefault(int(ep["seed"]), []).append(bool(ep["success"]))
    return {s: float(np.mean(v)) for s, v in by_seed.items()}


def paired_difference(entry: dict, reference: dict) -> dict | None:
    """Mean per-test-seed success difference (entry − reference) on their shared test seeds."""
    a, b = _per_test_seed(entry), _per_test_seed(reference)
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    d = np.array([a[s] - b[s] for s in shared])
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    ci = [float(d.mean() - half), float(d.mean() + half)] if math.isfinite(half) else None
    return {"mean": float(d.mean()), "ci95": ci, "n_test_seeds": len(shared),
            "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "ties": int((d == 0).sum())}


def _method_row(entry: dict, reference: dict | None) -> dict:
    n = sum(p["n"] for p in entry["per_seed"])
    k = sum(int(ep["success"]) for ep in entry["per_episode"])
    # training seeds whose model is identical to another's reuse its episodes: not new evidence
    twins = {int(t) for t in (entry.get("identical_to") or {})}
    ci = list(distinct_wilson_interval(((ep["train_seed"], ep["success"]) for ep in entry["per_episode"]), twins))
    lat = entry["latency_ms"]["policy"]
    row = {
        "success_rate": entry["success_rate"],
        "std_over_training_seeds": entry["std"],
        "ci95": ci,
        "successes": k,
        "episodes": n,
        "distinct_models": len(entry["per_seed"]) - len(twins),
        "training_seeds": len(entry["per_seed"]),
        "policy_ms": lat,
        "perception_ms": entry["latency_ms"].get("perception"),
        "mean_squared_jerk": entry["smoothness"].get("mean_squared_jerk"),
        "replans_mean": entry.get("replans_mean"),
        "train_wall_s": entry.get("train_wall_s"),
    }
    if reference is not None and entry is not reference:
        row["paired_difference_vs_kubm"] = paired_difference(entry, reference)
        ref_ms, ms = reference["latency_ms"]["policy"]["median"], lat["median"]
        row["latency_ratio_to_kubm"] = (ms / ref_ms) if ms and ref_ms else None
    return row


def build_summary(evals: Sequence[tuple[Path, dict]]) -> dict:
    tasks = {}
    for path, doc in evals:
        validate_eval(doc)
        tid = f"{doc['suite']}/{doc['task']}"
        if tid in tasks:
            raise ValueError(f"{path}: a second eval.json for {tid}")
        ref = doc["methods"].get(REFERENCE)
        tasks[tid] = {
            "eval": str(path),
            "protocol": {k: doc["protocol"].get(k) for k in ("episodes", "horizon", "replan", "test_seeds")},
            "methods": {m: _method_row(e, ref) for m, e in doc["methods"].items()},
        }
    methods = sorted({m for t in tasks.values() for m in t["methods"]}, key=lambda m: (m != REFERENCE, m))
    return {"reference": REFERENCE, "methods": methods, "tasks": dict(sorted(tasks.items())),
            "statistics": {
                "success_rate": "mean over training seeds of per-seed success (final step)",
                "ci95": "Wilson score interval over the episodes of all training seeds pooled; a training seed "
                        "whose model is identical to another's (closed-form methods) adds no episodes",
                "paired_difference_vs_kubm": "per test seed: success averaged over training seeds, method minus "
                                             "K-UBM; mean and normal 95 % interval over the shared test seeds",
                "policy_ms": "per-step policy time, median and p95 over episodes (same evaluator for all)",
                "latency_ratio_to_kubm": "median policy ms / K-UBM's median policy ms",
            }}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}"


def render_markdown(summary: dict) -> str:
    lines = ["# kubm results summary", "",
             "Success is final-step success over test episodes (mean over training seeds) with the pooled "
             "Wilson 95 % interval; Δ vs K-UBM is the paired per-test-seed difference with its 95 % interval; "
             "latency is the per-step policy time (median) and its ratio to K-UBM. Generated by `kubm summary` "
             "from the eval.json files listed per task.", ""]
    for tid, t in summary["tasks"].items():
        p = t["protocol"]
        lines += [f"## {tid}", "", f"{p['episodes']} test episodes per training seed, horizon {p['horizon']}, "
                  f"replanning {'on' if p['replan'] else 'off'} (`{t['eval']}`).", "",
                  "| method | success % | 95 % CI | seeds × episodes | Δ vs K-UBM (pp) | policy ms/step | × K-UBM | jerk |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, r in t["methods"].items():
            d = r.get("paired_difference_vs_kubm")
            if d is None:
                delta = "ref" if m == summary["reference"] else "–"
            else:
                ci = "" if d["ci95"] is None else f" [{100 * d['ci95'][0]:+.0f}, {100 * d['ci95'][1]:+.0f}]"
                delta = f"{100 * d['mean']:+.0f}{ci}"
            ms = r["policy_ms"]["median"]
            n_distinct = r["distinct_models"]
            twins_note = "" if n_distinct == r["training_seeds"] else f" ({n_distinct} distinct model)"
            ratio = r.get("latency_ratio_to_kubm")
            jerk = r["mean_squared_jerk"]
            lines.append(
                f"| {m} | {_pct(r['success_rate'])} | {_pct(r['ci95'][0])}–{_pct(r['ci95'][1])} | "
                f"{r['training_seeds']} × {r['episodes'] // max(r['training_seeds'], 1)}"
                f"{twins_note} | {delta} | "
                f"{'–' if ms is None else f'{ms:.3f}'} | {'1' if m == summary['reference'] else ('–' if ratio is None else f'{ratio:.2f}')} | "
                f"{'–' if jerk is None else f'{jerk:.3g}'} |")
        lines.append("")
    lines += ["Plots: `summary_plots/success.png`, `summary_plots/latency.png`.", ""]
    return "\n".join(lines)


def _plots(summary: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    tasks, methods = list(summary["tasks"]), summary["methods"]
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(tasks))
    out = []
    for kind in ("success", "latency"):
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks) * max(len(methods), 1) / 2), 4))
        for j, m in enumerate(methods):
            vals, lo, hi = [], [], []
            for t in tasks:
                r = summary["tasks"][t]["methods"].get(m)
                if r is None:
                    vals.append(np.nan), lo.append(0), hi.append(0)
                elif kind == "success":
                    v = 100 * r["success_rate"]
                    vals.append(v), lo.append(max(0.0, v - 100 * r["ci95"][0])), hi.append(max(0.0, 100 * r["ci95"][1] - v))
                else:
                    med, p95 = r["policy_ms"]["median"], r["policy_ms"]["p95"]
                    vals.append(np.nan if med is None else med), lo.append(0), hi.append(0 if p95 is None else max(0.0, p95 - med))
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=m)
        ax.set_xticks(x, tasks, rotation=20, ha="right")
        if kind == "success":
            ax.set_ylabel("success % (Wilson 95 % CI)")
            ax.set_ylim(0, 100)
        else:
            ax.set_ylabel("policy ms per step (median, bar to p95)")
            ax.set_yscale("log")
        ax.legend(fontsize=8, ncol=min(len(methods), 5))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / f"{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def write_summary(eval_paths: Sequence[Path], out_md: Path) -> dict:
    """Read eval.json files, write ``out_md``, the .json beside it and ``summary_plots/``."""
    evals = []
    for p in eval_paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist; build it with `snakemake {p}`")
        evals.append((p, json.loads(p.read_text())))
    if not evals:
        raise ValueError("no eval.json files given")
    summary = build_summary(evals)
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    plots = _plots(summary, out_md.parent / f"{out_md.stem}_plots")
    summary["plots"] = [str(p.relative_to(out_md.parent)) for p in plots]
    out_md.with_suffix(".json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    out_md.write_text(render_markdown(summary))
    return summary
