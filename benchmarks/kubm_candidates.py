"""Collect K-UBM candidate runs (one training seed, validation rollouts) into one JSON table.

A candidate directory holds what `kubm fit` and `kubm evaluate` wrote for one setting:

    <dir>/cfg.yaml                         the fit.kubm overrides
    <dir>/kubm/seed0/fit_summary.json      fit time, test open-loop action RMS, ρ(K)
    <dir>/eval_replan/eval.json            rollouts with replanning
    <dir>/eval_open/eval.json              the same seeds open loop (optional)

The rollouts use seeds that are neither training nor test seeds (validation), so choosing
a setting from this table never looks at the test seeds.

    python benchmarks/kubm_candidates.py /tmp/cands/relocate --out benchmarks/results/kubm_candidates_relocate.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def _success(path: Path) -> dict | None:
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    (method, m), = doc["methods"].items()
    k = sum(e["success"] for e in m["per_episode"])
    return {"method": method, "success_rate": m["success_rate"], "successes": k, "episodes": len(m["per_episode"]),
            "ci95": m["ci95"], "replans_mean": m["replans_mean"], "seeds": doc["protocol"]["test_seeds"][:1]
            + doc["protocol"]["test_seeds"][-1:]}


def collect(root: Path) -> dict:
    rows = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        fit = d / "kubm" / "seed0" / "fit_summary.json"
        replan = _success(d / "eval_replan" / "eval.json") or _success(d / "eval.json")
        if not replan:
            continue
        row = {"replan": replan, "open_loop": _success(d / "eval_open" / "eval.json")}
        if (d / "cfg.yaml").is_file():
            row["overrides"] = (yaml.safe_load((d / "cfg.yaml").read_text()) or {}).get("fit", {}).get("kubm")
        if fit.is_file():
            s = json.loads(fit.read_text())
            row["fit"] = {k: s.get(k) for k in ("train_wall_s", "iterations", "openloop_action_rms_rad",
                                                "spectral_radius", "replan_threshold_px")}
        rows[d.name] = row
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    text = json.dumps(collect(args.root), indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
