"""Replan-trigger settings for one K-UBM (or KODex) model, on validation seeds.

Rolls the model out on seeds that are neither training nor test seeds (50000 onwards, as
`benchmarks/kubm_candidates.py`) under each trigger setting and prints JSON: successes,
replans per episode, and per-seed outcomes, so a setting that changes *which* episodes
succeed is told apart from one that changes nothing.

    open        no replanning
    envelope    the fitted trigger: the per-plan-age threshold calibrated on training demos
    <number>    one threshold in px for every plan age (the envelope switched off)

    python benchmarks/replan_trigger.py adroit/relocate --model models/adroit/relocate/kubm/seed0 \
        --settings open envelope 6.6 15 25 --out benchmarks/results/replan_trigger/adroit_relocate.json

The inputs are the task's own (data/{suite}/{task}/features/test.zarr for the dimensions and
the AE check, models/{suite}/{task}/flow_ae), under --root.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import ValidationRollouts, emit_json, validation_seeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--settings", nargs="+", default=["open", "envelope"])
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("-c", "--configfile", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    run = ValidationRollouts.load(args.task, args.model, args.root, args.configfile)
    policy = run.policy
    envelope, calibrated = policy.replan_threshold_by_step, policy.replan_threshold_px
    seeds = validation_seeds(args.episodes)
    rows = {}
    for setting in args.settings:
        replan = setting != "open"
        if setting not in ("open", "envelope"):
            policy.extra["replan_threshold_px_by_step"] = None
            policy.replan_threshold_px = float(setting)
        else:
            policy.extra["replan_threshold_px_by_step"] = envelope
            policy.replan_threshold_px = calibrated
        t0, eps = time.time(), []
        for seed in seeds:
            eps.append(run.run(seed, replan=replan))
        k = sum(e.success for e in eps)
        rows[setting] = {"successes": int(k), "episodes": len(eps),
                         "replans_mean": float(np.mean([e.replans for e in eps])),
                         "success_per_seed": "".join(str(int(e.success)) for e in eps)}
        print(f"{setting}: {k}/{len(eps)}, {rows[setting]['replans_mean']:.1f} replans/episode, "
              f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    doc = {"task": args.task, "model": str(args.model), "validation_seeds": [seeds[0], seeds[-1]],
           "calibrated_threshold_px": calibrated, "envelope_px_every_20_steps":
           None if envelope is None else [round(x, 1) for x in envelope[::20]], "rows": rows}
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
