"""Diffusion Policy / ACT settings judged on demos held out from the training seeds.

Trains one method on all but ``val_demos`` demos of a task's *train* feature store (the fit
stage's split) and prints JSON: the loss curve's plateau test, the held-out chunk action RMS
(rad) at every check beside always predicting the training-mean action, CPU seconds, and
for Diffusion Policy the ε-MSE by diffusion step on training windows. The test seeds are
never read.

    python benchmarks/chunk_policy_validation.py adroit/relocate --method diffusion \
        --variant x0 '{"prediction_type": "sample"}' --variant eps '{"prediction_type": "epsilon"}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task, split_task_id, with_method_config
from kubm.policies.features import ChunkData, load_features, split_validation


def run(method: str, fs, params: dict, seed: int) -> dict:
    if method == "diffusion":
        from kubm.policies.diffusion import DiffusionConfig as Config
        from kubm.policies.diffusion import DiffusionModel as Model
        from kubm.policies.diffusion import denoising_errors
        from kubm.policies.diffusion import train_diffusion as train_fn
    else:
        from kubm.policies.act import ActConfig as Config
        from kubm.policies.act import ActModel as Model
        from kubm.policies.act import train_act as train_fn
    cfg = Config.from_dict(params)
    fit_eps, val_eps = split_validation(fs.episodes, cfg.val_demos)
    data, val = ChunkData.from_episodes(fit_eps), ChunkData.from_episodes(val_eps)
    torch.manual_seed(seed)
    model = Model(cfg, fs.d_q, fs.d_flow, fs.d_c)
    model.set_statistics(data.obs, data.action)
    c0, t0 = time.process_time(), time.perf_counter()
    curves = train_fn(model, data, seed=seed, val=val)
    out = {"cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1),
           "iterations": len(curves["loss"]), "plateau": curves["plateau"],
           "loss_last_5pct": float(np.mean(curves["loss"][-max(1, len(curves["loss"]) // 20):])),
           "val_iteration": curves["val_iteration"], "val_chunk_rms_rad": [round(v, 4) for v in curves["val_chunk_rms_rad"]],
           "val_mean_action_rms_rad": curves["val_mean_action_rms_rad"],
           "val_ratio_final": curves["val_chunk_rms_rad"][-1] / curves["val_mean_action_rms_rad"],
           "n_fit": len(fit_eps), "n_val": len(val_eps)}
    if method == "diffusion":
        out["eps_mse_by_step"] = denoising_errors(model, data, seed=seed)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--method", choices=["diffusion", "act"], required=True)
    ap.add_argument("--train", type=Path, help="train feature store (default data/{suite}/{task}/features/train.zarr)")
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
    base = with_method_config(config, suite, task, args.method)["fit"][args.method]
    fs = load_features(args.train or Path(f"data/{suite}/{task}/features/train.zarr"))
    out = {"task": args.task, "method": args.method, "base": base, "variants": {}}
    for name, text in args.variant or [["default", "{}"]]:
        res = {"overrides": json.loads(text), **run(args.method, fs, {**base, **json.loads(text)}, args.seed)}
        out["variants"][name] = res
        print(json.dumps({name: res}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
