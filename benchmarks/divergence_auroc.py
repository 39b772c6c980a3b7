"""Does the end-of-episode flow divergence tell failed episodes from successful ones?

For every replanning method of each eval.json, reads each episode's `final_divergence_px`
(predicted vs observed point centroid at the last step) and prints JSON: the AUROC of that
distance as a predictor of failure (Mann–Whitney, ties counted half) and the medians for
failures and successes. A first look at issue 18's claim 4, which wants per-step curves.

    python benchmarks/divergence_auroc.py results/adroit/{relocate,door}/eval.json results/dexart/bucket/eval.json \
        --out benchmarks/results/divergence_auroc.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def auroc(positives: list[float], negatives: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    doc = {}
    for path in args.evals:
        ev = json.loads(path.read_text())
        for method, m in ev["methods"].items():
            eps = [e for e in m["per_episode"] if e.get("final_divergence_px") is not None]
            if not eps:
                continue
            fail = [e["final_divergence_px"] for e in eps if not e["success"]]
            ok = [e["final_divergence_px"] for e in eps if e["success"]]
            doc[f"{ev['suite']}/{ev['task']}/{method}"] = {
                "episodes": len(eps), "failures": len(fail),
                "auroc_failure": auroc(fail, ok) if fail and ok else None,
                "median_px_failures": statistics.median(fail) if fail else None,
                "median_px_successes": statistics.median(ok) if ok else None}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
