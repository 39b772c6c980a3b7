"""Collect what the fits of a task recorded (diagnostics.json, fit_summary.json) into one JSON,
and check the baselines issue's bar on each Diffusion Policy and ACT fit: the held-out chunk
RMS at most 0.3 x that of always predicting the training-mean action.

The fit directories are the study's, models/{suite}/{task}/{method}/seed{k} under --root; the
held-out windows are the `val_demos` training demos each fit left out (never test seeds).

    python benchmarks/fit_diagnostics.py adroit/door --root <study workspace> \\
        --command "snakemake ... (how the fits were made)" --out benchmarks/results/study_door_fits.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import emit_json

BAR = 0.3  # held-out chunk RMS / mean-action RMS
KEPT = ("iterations", "train_wall_s", "train_cpu_s", "final_loss", "stopped", "plateau", "n_parameters",
        "chunk_errors_train", "chunk_errors_val", "chunk_errors_test")


def fit_row(model_dir: Path) -> dict:
    diag = json.loads((model_dir / "diagnostics.json").read_text())
    summary = json.loads((model_dir / "fit_summary.json").read_text())
    row = {k: diag[k] for k in KEPT if k in diag}
    row["torch_threads"] = summary.get("torch_threads")
    curves = model_dir / "curves.json"
    if curves.is_file():  # the held-out chunk RMS over training: has it levelled off?
        c = json.loads(curves.read_text())
        if c.get("val_iteration"):
            row["val_curve"] = {"iteration": c["val_iteration"], "chunk_rms_rad": c["val_chunk_rms_rad"]}
    val = diag.get("chunk_errors_val")
    if val is not None:
        row["meets_bar"] = val["ratio_to_mean_action"] <= BAR
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--methods", nargs="+", default=["diffusion", "act"])
    ap.add_argument("--command", required=True, help="how the fits were made, recorded as given")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    fits, bar = {}, {}
    for method in args.methods:
        dirs = sorted((args.root / "models" / args.task / method).glob("seed*"),
                      key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        rows = {f"{method}/{d.name}": fit_row(d) for d in dirs if (d / "diagnostics.json").is_file()}
        fits.update(rows)
        ratios = [r["chunk_errors_val"]["ratio_to_mean_action"] for r in rows.values() if "chunk_errors_val" in r]
        if ratios:
            bar[method] = {"held_out_ratio_per_seed": ratios, "max": max(ratios), "bar": BAR,
                           "met_by_every_seed": max(ratios) <= BAR}
    doc = {"task": args.task, "command": args.command, "source": "diagnostics.json and fit_summary.json of each fitted model dir",
           "bar": bar, "fits": fits}
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
