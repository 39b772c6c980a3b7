"""A newcomer's `make pull` then fit + evaluate, timed from a fresh clone. Prints (and writes) JSON.

Clones the repository, links an existing virtual environment into the clone (so `make setup`'s
install is not timed: it would rewrite that environment's editable install), then times the two
commands of `make pull` and the target's build:

    kubm pull TASK                                    # features + flow AE, as dvc.lock records them
    snakemake TARGET --touch --configfile PROFILE     # make pull's second command
    snakemake TARGET --cores N                        # fit + evaluate under the default config

and compares each method's entry of the new eval.json with the committed one, timing fields
aside (the committed document comes from the study profile, whose K-UBM, KODex and regression
settings are the default config's, so the entries should be identical).

    python benchmarks/newcomer.py [--task adroit/relocate] [--cores 2] [--out benchmarks/results/newcomer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit_json
from headline import PeakRss, per_rule
from kubm.evaluation.report import without_fields

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    t0 = time.perf_counter()
    before = os.times()
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        with PeakRss(proc.pid) as rss:
            rc = proc.wait()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"command": " ".join(cmd), "returncode": rc, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(cpu, 1), "peak_rss_mb": round(rss.peak_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="adroit/relocate")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--profile", default="config/study.yaml", help="make pull's PROFILE (the lock's profile)")
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv", help="an installed environment to link")
    ap.add_argument("--workdir", type=Path, help="where to clone (default: a temporary directory, removed after)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="kubm-newcomer-")
    clone = (args.workdir or Path(tmp.name)) / "kubm"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(args.venv.resolve())
    env = {**os.environ, "PYTHONPATH": str(clone / "src"),  # the clone's code, not the linked install's
           "PATH": f"{clone / '.venv' / 'bin'}:{os.environ['PATH']}"}
    target = f"results/{args.task}/eval.json"
    committed = json.loads((clone / target).read_text())
    log = clone / "newcomer.log"
    steps = {}
    load_before = os.getloadavg()
    steps["kubm_pull"] = timed(["kubm", "pull", args.task], clone, env, log)
    if steps["kubm_pull"]["returncode"] == 0:
        steps["touch"] = timed(["snakemake", target, "--touch", "--cores", "1", "--configfile", args.profile],
                               clone, env, log)
        steps["fit_and_evaluate"] = timed(["snakemake", target, "--cores", str(args.cores)], clone, env, log)
    ok = all(s["returncode"] == 0 for s in steps.values())
    doc = {"task": args.task, "cores": args.cores, "steps": steps,
           "pull_and_build_wall_s": round(sum(s["wall_s"] for s in steps.values()), 1),
           "rules": per_rule(clone / "logs" / "benchmarks")}
    if ok:
        new = json.loads((clone / target).read_text())
        doc["same_as_committed"] = {m: without_fields(v) == without_fields(committed["methods"].get(m))
                                    for m, v in new["methods"].items()}
    else:
        doc["log_tail"] = log.read_text()[-3000:]
    doc["machine"] = {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before]}
    doc["git_revision"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip()
    emit_json(doc, args.out)
    if tmp is not None:
        tmp.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
