"""How the time-indexed regression's held-out open-loop error moves with the number of
training demos and with its inputs: is a task limited by data, or by what ξ_{-1} carries?

Fits the regression's closed form (per-step ridge map from standardised inputs to a_t, as
`policies/regression`) on random subsets of the training demos and reports the action RMS
(rad) of its plans on the test demos, overall and over the first 50 steps. Inputs compared:

    xi          [qpos_0; flow latent_0; context]   (what every method sees)
    object      [privileged object position_0; context]   (simulator state, a diagnostic only)

    python benchmarks/regression_learning_curve.py adroit/relocate \
        --out benchmarks/results/regression_learning_curve_relocate.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import zarr


def _episodes(root: Path, suite: str, task: str, split: str) -> list[dict]:
    base = root / "data" / suite / task
    f = zarr.open_group(str(base / "features" / f"{split}.zarr"), mode="r")
    d = zarr.open_group(str(base / "demos" / f"{split}.zarr"), mode="r")
    ends = f["meta/episode_ends"][:]
    starts = np.r_[0, ends[:-1]]
    A, Q, F, C = (f[f"data/{k}"][:] for k in ("action", "qpos", "flow", "context"))
    O = d["data/object_state"][:]
    return [{"a": A[s:e], "xi": np.r_[Q[s], F[s], C[s]], "object": np.r_[O[s, :3], C[s]]}
            for s, e in zip(starts, ends)]


def _fit_and_score(train: list[dict], test: list[dict], inputs: str, ridge: float) -> tuple[float, float]:
    X = np.array([e[inputs] for e in train], float)
    Xt = np.array([e[inputs] for e in test], float)
    Y = np.array([e["a"].reshape(-1) for e in train], float)
    Yt = np.array([e["a"].reshape(-1) for e in test], float)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    G, Gt = np.c_[(X - mu) / sd, np.ones(len(X))], np.c_[(Xt - mu) / sd, np.ones(len(Xt))]
    R = ridge * np.eye(G.shape[1])
    R[-1, -1] = 0.0  # the offset is not shrunk
    W = np.linalg.solve(G.T @ G + R, G.T @ Y)
    err = (Gt @ W - Yt).reshape(len(test), *test[0]["a"].shape)
    return float(np.sqrt((err ** 2).mean())), float(np.sqrt((err[:, :50] ** 2).mean()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 30, 40, 50])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    suite, task = args.task.split("/")
    train, test = _episodes(args.root, suite, task, "train"), _episodes(args.root, suite, task, "test")
    rng = np.random.default_rng(0)
    doc = {"task": args.task, "n_train": len(train), "n_test": len(test), "ridge": args.ridge,
           "repeats": args.repeats, "curve": {}, "inputs_all_demos": {}}
    for n in [k for k in args.sizes if k <= len(train)]:
        scores = [_fit_and_score([train[i] for i in rng.choice(len(train), n, replace=False)], test, "xi", args.ridge)
                  for _ in range(args.repeats if n < len(train) else 1)]
        doc["curve"][str(n)] = {"action_rms_rad": float(np.mean([s[0] for s in scores])),
                                "action_rms_rad_first50": float(np.mean([s[1] for s in scores]))}
    for inputs in ("xi", "object"):
        rms, first50 = _fit_and_score(train, test, inputs, args.ridge)
        doc["inputs_all_demos"][inputs] = {"action_rms_rad": rms, "action_rms_rad_first50": first50}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
