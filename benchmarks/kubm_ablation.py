"""Leave-one-out ablation of the K-UBM recipe: success, open-loop RMS and fit time.

Each row removes one part of the final recipe (the defaults in config/config.yaml):

    full            the recipe itself, refitted here (same commands and thread count as the rows)
    no_replanning   the same models run open loop (from the evaluation's open-loop ablation)
    windows_only    no full-horizon rollout loss: 40-step windows only
    dense_K         a free dense K (no stability by construction), at the recipe's rates
    dense_K_lr1e-4  the same at the paper's smaller K rate
    modal_K         K = P·blockdiag(r R(θ))·P⁻¹ learned end to end (no closed-form read-out)
    no_lift_skip    g(ξ) = MLP(ξ) without the linear path beside it

Every refitted row runs the product commands (`kubm fit`, `kubm evaluate`, `kubm openloop`)
with one extra config file that overrides `fit.kubm`, on the same training seeds and the
same test seeds as the pipeline. Success comes from the simulator with the evaluation
protocol of the config (sim perception, replanning); open-loop RMS is the held-out action
error of the plan from ξ_{-1} on the test demos (a diagnostic, never used to choose).

    python benchmarks/kubm_ablation.py adroit/relocate --seeds 0 1 \
        --out benchmarks/results/kubm_ablation/adroit_relocate.json
    python benchmarks/kubm_ablation.py --table benchmarks/results/kubm_ablation/*.json

Prints JSON (and writes it with --out); --table prints the Markdown table of the README.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

VARIANTS: dict[str, dict] = {
    "full": {},
    "windows_only": {"trajectory_weight": 0.0, "window_weight": 1.0},
    "dense_K": {"dynamics": "dense"},
    "dense_K_lr1e-4": {"dynamics": "dense", "lr_K": 1e-4},  # the paper's dense K at a rate it survives
    "modal_K": {"dynamics": "modal"},
    "no_lift_skip": {"lift_skip": False},
}
ROW_ORDER = ["full", "no_replanning", *list(VARIANTS)[1:]]
DEFAULT_VARIANTS = ["full", "windows_only", "dense_K", "dense_K_lr1e-4", "no_lift_skip"]
KUBM = str(Path(sys.executable).parent / "kubm")


class FitFailed(Exception):
    pass


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc == 1 and cmd[1] == "fit":  # the CLI's code for a diverged fit: a result of the row
        raise FitFailed(log.read_text().strip().splitlines()[-1])
    if rc != 0:
        raise SystemExit(f"command failed (rc {rc}), see {log}: {' '.join(cmd)}")


def _row(eval_doc: dict, openloop_doc: dict, seeds: list[int], *, open_loop: bool = False) -> dict:
    m = eval_doc["methods"]["kubm"]
    eps = [e for e in m["per_episode"] if e["train_seed"] in seeds]
    if open_loop:
        ol = m.get("open_loop")
        if ol is None:
            raise SystemExit("the evaluation has no open-loop ablation (evaluate.open_loop_ablation: false)")
        k, n = ol["successes"], ol["episodes"]
    else:
        k, n = sum(bool(e["success"]) for e in eps), len(eps)
    from kubm.evaluation.metrics import wilson_interval

    rms = openloop_doc["methods"]["kubm"]["seeds"]
    chosen = [rms[f"seed{s}"] for s in seeds if f"seed{s}" in rms]
    return {"success_rate": k / n, "successes": k, "episodes": n, "ci95": list(wilson_interval(k, n)),
            "replans_mean": 0.0 if open_loop else sum(e["replans"] for e in eps) / len(eps),
            "openloop_rms_rad": sum(c["action_rms_rad"] for c in chosen) / len(chosen),
            "openloop_rms_rad_first50": sum(c["action_rms_rad_first50"] for c in chosen) / len(chosen),
            "fit_wall_s": m.get("train_wall_s")}


def ablate(task: str, seeds: list[int], variants: list[str], runs: Path, configfiles: list[Path],
           threads: int) -> dict:
    suite, name = task.split("/")
    data = Path(f"data/{suite}/{name}")
    test, train, ae = data / "features/test.zarr", data / "features/train.zarr", Path(f"models/{suite}/{name}/flow_ae")
    base = [a for f in configfiles for a in ("--configfile", str(f))]
    rows: dict[str, dict] = {}
    for variant in variants:
        out = runs / suite / name / variant
        override = out / "config.yaml"
        override.parent.mkdir(parents=True, exist_ok=True)
        override.write_text(yaml.safe_dump({"fit": {"kubm": VARIANTS[variant]}}))
        cfg = [*base, "--configfile", str(override)]
        dirs = [out / f"seed{s}" for s in seeds]
        t0 = time.time()
        try:
            for s, d in zip(seeds, dirs):
                if not (d / "config.json").exists():  # resumable: a finished fit is kept
                    _run([KUBM, "fit", task, "--method", "kubm", "--seed", str(s), "--train", str(train),
                          "--test", str(test), "--ae", str(ae), "--out", str(d), "--threads", str(threads),
                          "--no-progress", *cfg], out / f"fit_seed{s}.log")
        except FitFailed as e:
            rows[variant] = {"overrides": VARIANTS[variant], "diverged": str(e)}
            print(json.dumps({variant: rows[variant]}), flush=True)
            continue
        eval_path, ol_path = out / "eval.json", out / "openloop.json"
        if not eval_path.exists():
            _run([KUBM, "evaluate", task, "--models", *map(str, dirs), "--ae", str(ae), "--test", str(test),
                  "--out", str(eval_path), "--threads", str(threads), "--no-progress", *cfg], out / "evaluate.log")
        if not ol_path.exists():
            _run([KUBM, "openloop", task, "--models", *map(str, dirs), "--test", str(test), "--out", str(ol_path),
                  *cfg], out / "openloop.log")
        ev, ol = json.loads(eval_path.read_text()), json.loads(ol_path.read_text())
        rows[variant] = {"overrides": VARIANTS.get(variant, {}), **_row(ev, ol, seeds)}
        if variant == "full":
            rows["no_replanning"] = {"overrides": {"evaluate.replan": False}, **_row(ev, ol, seeds, open_loop=True)}
        print(json.dumps({variant: rows[variant]}), flush=True)
        print(f"{variant}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return {"task": task, "training_seeds": seeds, "test_episodes_per_seed": ev["protocol"]["episodes"],
            "test_seeds": ev["protocol"]["test_seeds"], "rows": rows}


def table(docs: list[dict]) -> str:
    head = ("| task | row | success | 95 % CI | replans/ep | open-loop RMS (rad) | first 50 steps | fit (s) |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for doc in docs:
        n = f"{len(doc['training_seeds'])}×{doc['test_episodes_per_seed']}"
        for name in [r for r in ROW_ORDER if r in doc["rows"]]:
            r = doc["rows"][name]
            if "diverged" in r:
                lines.append(f"| {doc['task']} ({n}) | {name} | fit diverged | – | – | – | – | – |")
                continue
            fit = "–" if r["fit_wall_s"] is None else f"{r['fit_wall_s']:.0f}"
            lines.append(f"| {doc['task']} ({n}) | {name} | {100 * r['success_rate']:.0f} % | "
                         f"{100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f} | {r['replans_mean']:.2f} | "
                         f"{r['openloop_rms_rad']:.3f} | {r['openloop_rms_rad_first50']:.3f} | {fit} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", nargs="?")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs/kubm_ablation"))
    ap.add_argument("-c", "--configfile", type=Path, action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+", help="print the Markdown table of these result files")
    args = ap.parse_args(argv)
    if args.table:
        print(table([json.loads(p.read_text()) for p in args.table]))
        return 0
    if not args.task:
        ap.error("a task (suite/task) or --table is required")
    doc = ablate(args.task, args.seeds, args.variants, args.runs, args.configfile, args.threads)
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
