"""Chunk sizes and execution horizons for Diffusion Policy and ACT, chosen on validation seeds.

For each variant (a set of `fit.<method>` overrides), fits the method on the task's training
features with `kubm fit` (the product path: the fit holds out `val_demos` training demos and
records their chunk error in diagnostics.json), then rolls the model out in the simulator on
validation seeds: 50000 onwards, neither training (0...) nor test (100000...) seeds, as
`benchmarks/replan_trigger.py`. The test seeds are never read.

Writes JSON after every variant and skips variants already in --out, so an interrupted sweep
resumes. A variant can reuse a model already fitted with the same settings (--reuse NAME=DIR).

    python benchmarks/chunk_sweep.py adroit/relocate --method diffusion \\
        --variant h8 '{"chunk_steps": 8, "n_action_steps": 4}' \\
        --variant h16 '{"chunk_steps": 16, "n_action_steps": 8}' --reuse h16=models/adroit/relocate/diffusion/seed0 \\
        --variant h32 '{"chunk_steps": 32, "n_action_steps": 16}' \\
        --out benchmarks/results/chunk_sweep/adroit_relocate_diffusion.json

Inputs are the task's own under --root: data/{suite}/{task}/features/{train,test}.zarr and
models/{suite}/{task}/flow_ae. Models are written to --workdir/NAME.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from _common import VALIDATION_START, ValidationRollouts, emit_json, fit_command, validation_seeds


def fit_variant(args, name: str, params: dict, out: Path) -> float:
    """`kubm fit` with the variant's overrides as a per-task method_params config; CPU seconds."""
    suite, task = args.task.split("/")
    override = args.workdir / f"{name}.yaml"
    override.parent.mkdir(parents=True, exist_ok=True)
    per_task = {"method_params": {args.method: params}}
    override.write_text(yaml.safe_dump({"suites": {suite: {"tasks": {task: per_task}}}}))
    cmd = fit_command(args.task, args.method, args.root, out, seed=args.seed, threads=args.threads,
                      configfiles=[*args.configfile, override])
    before = os.times()
    subprocess.run(cmd, check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def rollouts(args, model: Path) -> dict:
    run = ValidationRollouts.load(args.task, model, args.root, args.configfile)
    try:
        eps = [run.run(seed, replan=False) for seed in validation_seeds(args.episodes)]
    finally:
        run.env.close()
    k = sum(e.success for e in eps)
    return {"successes": int(k), "episodes": len(eps), "success_rate": k / len(eps),
            "success_per_seed": "".join(str(int(e.success)) for e in eps)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--method", choices=["diffusion", "act"], required=True)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    ap.add_argument("--reuse", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0, help="training seed of every fit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--workdir", type=Path, default=Path("sweeps"))
    ap.add_argument("-c", "--configfile", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.workdir = args.workdir / args.task / args.method
    reuse = dict(r.split("=", 1) for r in args.reuse)
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {
        "task": args.task, "method": args.method, "training_seed": args.seed,
        "validation_seeds": [VALIDATION_START, VALIDATION_START + args.episodes - 1], "variants": {}}
    for name, text in args.variant:
        if name in doc["variants"]:
            print(f"{name}: already in {args.out}", file=sys.stderr)
            continue
        params = json.loads(text)
        model = Path(reuse[name]) if name in reuse else args.workdir / name
        t0 = time.time()
        cpu = None if name in reuse else fit_variant(args, name, params, model)
        fitted = json.loads((model / "config.json").read_text())["config"]
        mismatched = {k: (v, fitted.get(k)) for k, v in params.items() if fitted.get(k) != v}
        if mismatched:  # a reused model must have been fitted with the variant's settings
            raise SystemExit(f"{name}: model {model} was fitted with other settings {mismatched}")
        diag = json.loads((model / "diagnostics.json").read_text())
        row = {"params": params, "model": str(model), "reused": name in reuse, "fit_cpu_s": cpu,
               "val_chunk_rms_rad": diag["chunk_errors_val"]["chunk_action_rms_rad"],
               "val_ratio_to_mean_action": diag["chunk_errors_val"]["ratio_to_mean_action"]}
        row.update(rollouts(args, model))
        row["wall_s"] = round(time.time() - t0, 1)
        doc["variants"][name] = row
        print(f"{name}: {row['successes']}/{row['episodes']} on validation seeds, held-out chunk RMS "
              f"{row['val_chunk_rms_rad']:.3f} rad", file=sys.stderr, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    best = max(doc["variants"].items(), key=lambda kv: (kv[1]["successes"], -kv[1]["val_chunk_rms_rad"]))
    doc["chosen"] = {"variant": best[0], "rule": "most validation successes; ties go to the lower held-out chunk RMS"}
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
