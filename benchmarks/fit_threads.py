"""Does a fit use its second thread? Per method, time `kubm fit` at 1 and at 2 torch threads.

The fit rule asks Snakemake for 2 threads, so on a 2-core machine fits run one at a time. If a
method gains little from the second thread, two 1-thread fits side by side finish the same
work sooner (`snakemake ... --set-threads fit=1`). Thread count changes a fit's floats
(reduction order), so it is recorded with the result (fit_summary.json's torch_threads,
eval.json's train_threads) rather than chosen silently.

Each fit runs the product command on the task's features under --root, shortened to
--iterations (a per-task method_params override; validation at the end only), one after the
other on an otherwise idle machine. Per method and thread count it reports the wall time of a
training iteration (the median step of curves.json's clock, so validations are left out), the
fit's training seconds and the whole command's wall and CPU seconds (calibration, diagnostics
and plots included), then

  speedup = ms per iteration at 1 thread / ms per iteration at 2 threads
  side_by_side_gain = 2 x (ms per iteration at 2 threads) / (ms per iteration at 1 thread)

the second being how much more training two 1-thread fits on two cores get through than one
2-thread fit at a time (> 1: run them side by side).

    python benchmarks/fit_threads.py adroit/door --root . --methods diffusion act kubm \\
        --out benchmarks/results/fit_threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import emit_json, fit_command

def timed_fit(args, method: str, threads: int, workdir: Path) -> dict:
    suite, task = args.task.split("/")
    params = {"iterations": args.iterations}
    if method in ("diffusion", "act"):
        params["val_every"] = args.iterations  # one validation, at the end, as every full fit has
    override = workdir / f"{method}.yaml"
    override.write_text(yaml.safe_dump({"suites": {suite: {"tasks": {task: {"method_params": {method: params}}}}}}))
    out = workdir / f"{method}_t{threads}"
    cmd = fit_command(args.task, method, args.root, out, threads=threads, configfiles=[override])
    before, t0 = os.times(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - t0, os.times()
    summary = json.loads((out / "fit_summary.json").read_text())
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    # the median step of the curves' clock: a training iteration, without the validations
    step = float(np.median(np.diff(json.loads((out / "curves.json").read_text())["time_s"])))
    return {"threads": threads, "command_wall_s": round(wall, 2), "command_cpu_s": round(cpu, 2),
            "train_wall_s": summary["train_wall_s"], "torch_threads": summary.get("torch_threads"),
            "ms_per_iteration": round(1000 * step, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--methods", nargs="+", default=["diffusion", "act", "kubm"])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    doc = {"task": args.task, "iterations": args.iterations, "cpu_count": os.cpu_count(), "methods": {}}
    with tempfile.TemporaryDirectory(prefix="kubm-fit-threads-") as tmp:
        for method in args.methods:
            runs = {t: timed_fit(args, method, t, Path(tmp)) for t in (1, 2)}
            w1, w2 = runs[1]["ms_per_iteration"], runs[2]["ms_per_iteration"]
            doc["methods"][method] = {"threads_1": runs[1], "threads_2": runs[2],
                                      "speedup": round(w1 / w2, 3), "side_by_side_gain": round(2 * w2 / w1, 3)}
    return 0 if emit_json(doc, args.out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
