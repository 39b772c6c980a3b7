"""The headline command, timed from a clean workspace. Prints (and writes) JSON.

Copies the project's tracked files into a fresh directory (no data, models or results),
runs ``snakemake TARGET --cores N [--configfile ...]`` there, and reports:
- wall time of the whole DAG, and its CPU time (from Snakemake's per-job benchmark files);
- per rule: jobs, summed wall and CPU seconds, the largest job's peak RSS;
- the peak RSS of the whole process tree, sampled every 0.5 s;
- the critical-path bound: CPU seconds / cores, the wall time no schedule can beat.

    python benchmarks/headline.py [--target results/dexart/bucket/eval.json] [--cores 2]
                                  [--configfile config/smoke_dexart.yaml] [--out benchmarks/results/headline.json]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

from _common import emit_json

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith("results/"):  # committed results would short-circuit the DAG
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


class PeakRss:
    """Peak summed RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every, self.peak_mb, self._stop = pid, every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_mb = max(self.peak_mb, total / 2**20)
            except psutil.Error:
                return
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def per_rule(bench_dir: Path) -> dict:
    rules: dict = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0})
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        rule = tsv.stem.split("_seed")[0]
        for name in ("collect", "segment", "track", "encode", "evaluate", "fit"):
            if rule.startswith(name + "_") or rule == name:
                rule = {"evaluate": "evaluate_method"}.get(name, name)
        with tsv.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                r = rules[rule]
                r["jobs"] += 1
                r["wall_s"] += float(row["s"])
                r["cpu_s"] += float(row.get("cpu_time") or 0.0)
                r["max_rss_mb"] = max(r["max_rss_mb"], float(row.get("max_rss") or 0.0))
    return {k: {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in sorted(rules.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="results/dexart/bucket/eval.json")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--workdir", type=Path, help="where to build (default: a temporary directory, removed after)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="kubm-headline-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    copy_tracked(work)
    cmd = [str(BIN / "snakemake"), args.target, "--cores", str(args.cores),
           *(["--configfile", *args.configfile] if args.configfile else [])]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with open(work / "headline.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        with PeakRss(proc.pid) as rss:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    rules = per_rule(work / "logs" / "benchmarks")
    cpu = sum(r["cpu_s"] for r in rules.values())
    doc = {
        "target": args.target, "configfiles": args.configfile, "cores": args.cores, "returncode": rc,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "lower_bound_wall_s": round(cpu / max(args.cores, 1), 1),
        "peak_rss_mb": round(rss.peak_mb, 1), "rules": rules,
        "machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                    "python": platform.python_version()},
        "git_revision": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(),
        "command": " ".join(["snakemake", *cmd[1:]]),
    }
    if rc != 0:
        doc["log_tail"] = (work / "headline.log").read_text()[-3000:]
    emit_json(doc, args.out)
    if tmp is not None:
        tmp.cleanup()
    sys.exit(0 if rc == 0 else 1)


if __name__ == "__main__":
    main()
