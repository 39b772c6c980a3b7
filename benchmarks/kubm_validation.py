"""K-UBM settings chosen on validation demos held out from the training seeds.

Fits K-UBM variants (overrides of fit.kubm from the config) on the first N − n_val demos
of a task's *train* feature store and reports the open-loop action RMS (rad) from ξ_{-1}
on the n_val held-out training demos, overall and over the first 50 steps, beside the
time-indexed regression fitted on the same demos. The test seeds are never read.

    python benchmarks/kubm_validation.py adroit/relocate --n-val 10 \
        --variant default '{}' --variant windows20 '{"trajectory_weight": 0, "window_steps": 20}'

Prints JSON (and writes it with --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task, split_task_id, with_method_config
from kubm.evaluation.openloop import plan_errors
from kubm.policies.features import action_limits, compute_scale, load_features, make_xi
from kubm.policies.kubm import KubmConfig, KubmPolicy
from kubm.policies.kubm.fitting_kubm import fit_features
from kubm.policies.regression import RegressionConfig, RegressionPolicy


def fit_kubm(fit_set, overrides: dict, base: dict, seed: int) -> tuple[KubmPolicy, dict]:
    cfg = KubmConfig.from_dict({**base, **overrides})
    model, curves, _, wall_s = fit_features(cfg, fit_set, seed)
    return KubmPolicy(model), {"fit_s": round(wall_s, 1), "final_loss": curves["loss"][-1],
                               "plateau": curves["plateau"], "max_rho": max(curves["rho"])}


def fit_regression(fit_set, ridge: float) -> RegressionPolicy:
    s = compute_scale(fit_set)
    lo, hi = action_limits(fit_set)
    x0 = np.stack([make_xi(ep.qpos[0], ep.flow[0], ep.context, s) for ep in fit_set.episodes])
    return RegressionPolicy.fit(RegressionConfig(ridge=ridge), x0, [ep.action for ep in fit_set.episodes],
                                d_q=fit_set.d_q, d_flow=fit_set.d_flow, d_c=fit_set.d_c, s=s,
                                action_low=lo, action_high=hi)


def brief(e: dict) -> dict:
    return {k: round(v, 4) for k, v in e.items() if k.startswith("action_rms_rad") and not k.endswith("per_step")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--train", type=Path, help="train feature store (default data/{suite}/{task}/features/train.zarr)")
    ap.add_argument("--n-val", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    ap.add_argument("-c", "--configfile", type=Path, action="append")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.configfile or [DEFAULT_CONFIG])
    suite, task = split_task_id(config, args.task)
    resolve_task(config, suite, task)
    config = with_method_config(config, suite, task, "kubm")
    base = config["fit"]["kubm"]
    fs = load_features(args.train or Path(f"data/{suite}/{task}/features/train.zarr"))
    if len(fs.episodes) <= args.n_val:
        raise SystemExit(f"{fs.path}: {len(fs.episodes)} demos, cannot hold out {args.n_val}")
    fit_set = dataclasses.replace(fs, episodes=fs.episodes[: -args.n_val])
    val = fs.episodes[-args.n_val:]
    out = {"task": args.task, "n_fit": len(fit_set.episodes), "n_val": len(val),
           "val_seeds": [ep.seed for ep in val], "base": base, "variants": {}}
    reg = fit_regression(fit_set, config["fit"]["regression"]["ridge"])
    out["regression"] = {"val": brief(plan_errors(reg, val)), "fit": brief(plan_errors(reg, fit_set.episodes))}
    print(json.dumps({"regression": out["regression"]}), flush=True)
    for name, text in args.variant or [["default", "{}"]]:
        policy, info = fit_kubm(fit_set, json.loads(text), base, args.seed)
        res = {"overrides": json.loads(text), **info, "val": brief(plan_errors(policy, val)),
               "fit": brief(plan_errors(policy, fit_set.episodes))}
        out["variants"][name] = res
        print(json.dumps({name: res}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
