"""Flow autoencoder reconstruction error (px) of every configured task whose AE exists.

Reads models/{suite}/{task}/flow_ae/metrics.json (written by `kubm train-ae`) and prints
JSON: test and train mean / p95 px per task, and the tasks not built yet.

    python benchmarks/flow_ae_errors.py --out benchmarks/results/flow_ae_errors.json

--update keeps the entries of an existing --out file for tasks whose AE is not under
--models here (a workspace rarely holds all eight tasks at once); each entry records the
models folder it was read from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kubm.config import DEFAULT_CONFIG, all_tasks, load_config


def table(doc: dict) -> str:
    lines = ["| task | test mean px | test p95 px | train mean px | centroid error, test (px) |", "|---|---|---|---|---|"]
    for task, r in doc["tasks"].items():
        lines.append(f"| {task} | {r['test']['mean']:.2f} | {r['test']['p95']:.2f} | {r['train']['mean']:.2f} | "
                     f"{r['test']['centroid_mean']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--update", action="store_true", help="keep --out's entries for tasks not found here")
    ap.add_argument("--table", type=Path, help="print the README's Markdown table of this results file")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    before = json.loads(args.out.read_text())["tasks"] if args.update and args.out and args.out.is_file() else {}
    config = load_config([DEFAULT_CONFIG])
    doc = {"tasks": {}, "missing": []}
    for suite, task in all_tasks(config):
        path = args.models / suite / task / "flow_ae" / "metrics.json"
        if not path.is_file():
            if f"{suite}/{task}" in before:
                doc["tasks"][f"{suite}/{task}"] = before[f"{suite}/{task}"]
            else:
                doc["missing"].append(f"{suite}/{task}")
            continue
        m = json.loads(path.read_text())
        doc["tasks"][f"{suite}/{task}"] = {
            split: {k: round(m[f"recon_px_{split}"][k], 3) for k in ("mean", "p95", "centroid_mean")}
            for split in ("test", "train")}
        doc["tasks"][f"{suite}/{task}"]["models"] = str(args.models)
    doc["tasks"] = dict(sorted(doc["tasks"].items()))
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
