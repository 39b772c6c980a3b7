"""The `kubm` command line: one command per pipeline stage, plus tools.

Each Snakemake rule calls exactly one of these commands with its declared
inputs/outputs and the config files, so every stage can be rerun by hand.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from kubm.config import DEFAULT_CONFIG, SPLITS, load_config, resolve_task, split_task_id
from kubm.errors import KubmError


class _KubmGroup(TyperGroup):
    """Every command's user errors (the KubmError family) end as one red line and exit
    code 2 (1 for a fit that diverged); any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KubmError as err:
            _fail(str(err), code=getattr(err, "exit_code", 2))


app = typer.Typer(cls=_KubmGroup, add_completion=False, no_args_is_help=True, help=__doc__)

ConfigFiles = Annotated[
    Optional[list[Path]],
    typer.Option("--configfile", "-c", help="config file(s), merged in order over config/config.yaml (as snakemake --configfile)"),
]
TaskArg = Annotated[str, typer.Argument(help="suite/task, e.g. adroit/relocate")]
SplitOpt = Annotated[str, typer.Option("--split", help="train or test")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads (Snakemake passes the rule's threads)")]
ProgressOpt = Annotated[bool, typer.Option(help="show a progress bar")]
MetricsOpt = Annotated[Optional[Path], typer.Option(help="QC metrics JSON (default: beside --out, <stage>_<split>.metrics.json)")]
VideoOpt = Annotated[Optional[Path], typer.Option(help="QC video (default: beside --out, <stage>_<split>.mp4)")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def config_files(configfiles: list[Path] | None) -> list[Path]:
    """`-c` files merge over config/config.yaml, as `snakemake --configfile` does (a profile
    such as config/smoke.yaml holds only what it changes)."""
    files = [Path(f) for f in configfiles or []]
    if DEFAULT_CONFIG.is_file() and not any(f.resolve() == DEFAULT_CONFIG.resolve() for f in files):
        files.insert(0, DEFAULT_CONFIG)
    return files or [DEFAULT_CONFIG]


def _load(configfiles: list[Path] | None) -> dict:
    return load_config(config_files(configfiles))


def _task(config: dict, task_id: str):
    suite, task = split_task_id(config, task_id)
    return resolve_task(config, suite, task)


def _stage_setup(task_id: str, configfile, threads: int | None = None, split: str | None = None):
    """The shared start of a stage command: checked split, validated config, resolved task, threads."""
    if split is not None:
        _check_split(split)
    config = _load(configfile)
    task = _task(config, task_id)
    if threads is not None:
        _set_threads(threads)
    return config, task


def _check_split(split: str) -> None:
    if split not in SPLITS:
        _fail(f"--split {split!r} is not allowed; allowed values: {list(SPLITS)}")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def collect(
    task_id: TaskArg,
    split: SplitOpt = "train",
    out: Annotated[Optional[Path], typer.Option(help="output store (default data/{suite}/{task}/demos/{split}.zarr)")] = None,
    configfile: ConfigFiles = None,
    progress: ProgressOpt = True,
) -> None:
    """Roll out the task's expert on the configured seeds and store the successful episodes."""
    from kubm.stages.collect import collect as run_collect

    _check_split(split)
    task = _task(_load(configfile), task_id)
    out = out or Path(f"data/{task.suite}/{task.task}/demos/{split}.zarr")
    summary = run_collect(task, split, out, progress=progress)
    typer.echo(f"wrote {out}: {summary['kept']} episodes from {summary['attempted']} seeds "
               f"(acceptance {summary['acceptance_rate']:.0%})")


def _qc_paths(out: Path, stage: str, split: str, metrics: Path | None, video: Path | None) -> tuple[Path, Path]:
    """QC files default to beside the store written (`<out dir>/<stage>_<split>.metrics.json`),
    so a stage run by hand writes only where it is told (Snakemake passes both paths)."""
    qc = Path(out).parent
    return metrics or qc / f"{stage}_{split}.metrics.json", video or qc / f"{stage}_{split}.mp4"


@app.command()
def segment(
    task_id: TaskArg,
    demos: Annotated[Path, typer.Option(help="demo store from collect")],
    out: Annotated[Path, typer.Option(help="mask store to write")],
    metrics: MetricsOpt = None,
    video: VideoOpt = None,
    split: SplitOpt = "train",
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
) -> None:
    """Masks of the manipulated object (backend from config: auto | sim | sam2 | sam3), scored by IoU vs ground truth."""
    from kubm.stages.segment import segment as run_segment

    config, task = _stage_setup(task_id, configfile, threads, split)
    metrics, video = _qc_paths(out, "segment", split, metrics, video)
    result = run_segment(task, config, demos, out, metrics, video, progress=progress)
    typer.echo(f"wrote {out}: backend {result['backend']}, mask IoU {result['mask_iou_mean']:.3f} ({metrics})")


@app.command()
def track(
    task_id: TaskArg,
    demos: Annotated[Path, typer.Option(help="demo store from collect")],
    masks: Annotated[Path, typer.Option(help="mask store from segment")],
    out: Annotated[Path, typer.Option(help="track store to write")],
    metrics: MetricsOpt = None,
    video: VideoOpt = None,
    split: SplitOpt = "train",
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
) -> None:
    """Track N object points through each episode (auto | sim | cotracker3 | opencv_lk), scored vs ground truth."""
    from kubm.stages.track import track as run_track

    config, task = _stage_setup(task_id, configfile, threads, split)
    metrics, video = _qc_paths(out, "track", split, metrics, video)
    result = run_track(task, config, demos, masks, out, metrics, video, progress=progress)
    typer.echo(f"wrote {out}: backend {result['backend']}, median error {result['median_px']:.2f} px, "
               f"{result['within_2px']:.0%} within 2 px ({metrics})")


@app.command()
def fit(
    task_id: TaskArg,
    train: Annotated[Path, typer.Option(help="train feature store (encode)")],
    test: Annotated[Path, typer.Option(help="test feature store (encode), for the open-loop diagnostics")],
    ae: Annotated[Path, typer.Option(help="flow autoencoder dir (train_ae)")],
    out: Annotated[Path, typer.Option(help="model dir to write, e.g. models/{suite}/{task}/kubm/seed0")],
    method: Annotated[str, typer.Option(help="method to fit")] = "kubm",
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
    device: Annotated[str, typer.Option(help="auto (CUDA when torch sees a GPU), cpu or cuda: where Diffusion "
                                             "Policy and ACT train; the other methods run on the CPU")] = "auto",
) -> None:
    """Fit one method for one training seed: weights, config, curves and diagnostics in --out."""
    from kubm.policies.devices import resolve_device
    from kubm.stages.fit import fit as run_fit

    resolve_device(device)  # an unavailable device fails before any input is read
    config, task = _stage_setup(task_id, configfile)
    s = run_fit(task, config, method, seed, train, test, ae, out, threads=threads, progress=progress, device=device)
    extras = [f"{k} {s[k]:.4g}" for k in ("final_loss", "spectral_radius", "openloop_action_rms_rad", "replan_threshold_px")
              if isinstance(s.get(k), (int, float))]
    typer.echo(f"wrote {out}: {method} seed {seed} trained in {s.get('train_wall_s', float('nan')):.0f} s"
               + (f" ({', '.join(extras)})" if extras else ""))


@app.command("train-ae")
def train_ae(
    task_id: TaskArg,
    train: Annotated[Path, typer.Option(help="train-split track store")],
    test: Annotated[Path, typer.Option(help="test-split track store")],
    out: Annotated[Path, typer.Option(help="model dir to write (model.safetensors, config.json, metrics.json)")],
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
) -> None:
    """Train the flow autoencoder (256 tracked points -> latent) and report test reconstruction error in px."""
    from kubm.stages.train_ae import train_ae as run_train_ae

    config, task = _stage_setup(task_id, configfile)
    metrics = run_train_ae(task, config, train, test, out, threads=threads, progress=progress)
    typer.echo(f"wrote {out}: test reconstruction {metrics['recon_px_test']['mean']:.3f} px mean, "
               f"{metrics['recon_px_test']['p95']:.3f} px p95")


@app.command()
def encode(
    task_id: TaskArg,
    demos: Annotated[Path, typer.Option(help="demo store")],
    tracks: Annotated[Path, typer.Option(help="track store")],
    masks: Annotated[Path, typer.Option(help="mask store")],
    ae: Annotated[Path, typer.Option(help="flow autoencoder dir")],
    out: Annotated[Path, typer.Option(help="feature store to write")],
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
) -> None:
    """Write the feature store: flow latents, qpos, actions and context per step."""
    from kubm.stages.encode import encode as run_encode

    config, task = _stage_setup(task_id, configfile, threads)
    summary = run_encode(task, config, demos, tracks, masks, ae, out, progress=progress)
    typer.echo(f"wrote {out}: {summary['episodes']} episodes, {summary['steps']} steps, "
               f"flow {summary['d_flow']}-d, context {summary['d_c']}-d")


def _set_threads(threads: int) -> None:
    # Snakemake passes the rule's `threads`; torch would otherwise use every core.
    import torch

    torch.set_num_threads(max(1, threads))


@app.command(context_settings={"allow_extra_args": True})
def evaluate(
    ctx: typer.Context,
    task_id: TaskArg,
    models: Annotated[list[Path], typer.Option(help="model dirs, one per method and training seed: "
                                               "--models A B C (after the task) or --models A --models B")],
    ae: Annotated[Path, typer.Option(help="flow autoencoder dir (train_ae)")],
    test: Annotated[Path, typer.Option(help="test feature store (encode)")],
    out: Annotated[Optional[Path], typer.Option(help="eval.json to write (default results/{suite}/{task}/eval.json)")] = None,
    configfile: ConfigFiles = None,
    threads: ThreadsOpt = 1,
    workers: Annotated[int, typer.Option(min=1, help="worker processes, one simulator each (each with one torch "
                                                     "thread); the result does not depend on it")] = 1,
    perturbed: Annotated[bool, typer.Option("--perturbed", help="the perturbed protocol: the task's perturbation "
                                            "on the same test seeds, context observed every step")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Roll every model out in the simulator on the test seeds (any method) and write eval.json."""
    from kubm.stages.evaluate import evaluate as run_evaluate

    stray = [a for a in ctx.args if a.startswith("-")]
    if stray:
        _fail(f"unexpected option(s) {stray}")
    models = [*models, *(Path(a) for a in ctx.args)]  # `--models A B C`: B and C arrive as extra args
    config, task = _stage_setup(task_id, configfile, threads)
    out = out or Path(f"results/{task.suite}/{task.task}/{'perturbed/' if perturbed else ''}eval.json")
    doc = run_evaluate(task, config, models, ae, test, out, progress=progress, workers=workers, perturbed=perturbed)
    for method, m in doc["methods"].items():
        typer.echo(f"{task.id} {method}: success {m['success_rate']:.0%} ± {m['std']:.0%} "
                   f"(95% CI {m['ci95'][0]:.0%}-{m['ci95'][1]:.0%}), replans {m['replans_mean']:.1f}"
                   + (f"; open loop {m['open_loop']['success_rate']:.0%}" if "open_loop" in m else ""))
    typer.echo(f"wrote {out}")


@app.command("merge-eval")
def merge_eval(
    task_id: TaskArg,
    inputs: Annotated[list[Path], typer.Argument(help="per-method documents, results/{suite}/{task}/methods/{method}.json")],
    out: Annotated[Path, typer.Option(help="eval.json to write")],
    configfile: ConfigFiles = None,
) -> None:
    """Merge per-method evaluations into the task's eval.json (in the order the config lists methods)."""
    from kubm.config import task_methods
    from kubm.evaluation.merge import merge_eval_files

    config, task = _stage_setup(task_id, configfile)
    doc = merge_eval_files(inputs, out, suite=task.suite, task=task.task,
                           order=task_methods(config, task.suite, task.task))
    typer.echo(f"wrote {out}: " + ", ".join(f"{m} {v['success_rate']:.0%}" for m, v in doc["methods"].items()))


@app.command(context_settings={"allow_extra_args": True})
def openloop(
    ctx: typer.Context,
    task_id: TaskArg,
    models: Annotated[list[Path], typer.Option(help="model dirs .../{method}/seed{k} (--models A B C)")],
    test: Annotated[Path, typer.Option(help="test feature store (encode)")],
    out: Annotated[Optional[Path], typer.Option(help="JSON to write (default: print only)")] = None,
    configfile: ConfigFiles = None,
) -> None:
    """Held-out open-loop action RMS (rad) from xi_-1 of every fitted method, per step and overall (JSON)."""
    import json

    from kubm.evaluation.openloop import openloop_report

    stray = [a for a in ctx.args if a.startswith("-")]
    if stray:
        _fail(f"unexpected option(s) {stray}")
    models = [*models, *(Path(a) for a in ctx.args)]
    config, task = _stage_setup(task_id, configfile)
    doc = openloop_report(models, test, task_id=task.id)
    text = json.dumps(doc, indent=1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    brief = {m: {k: v for k, v in e["pooled"].items() if k != "action_rms_rad_per_step"}
             for m, e in doc["methods"].items()}
    typer.echo(json.dumps(brief, indent=1) if out is not None else text)


@app.command()
def summary(
    evals: Annotated[list[Path], typer.Argument(help="eval.json files (one per task)")],
    out: Annotated[Path, typer.Option(help="summary.md to write (summary.json and <stem>_plots/ go beside it)")] = Path(
        "results/summary.md"),
    readme: Annotated[Optional[Path], typer.Option(help="also fill this README's generated results block")] = None,
) -> None:
    """Compare methods across tasks: success with Wilson intervals, paired differences and latency vs K-UBM."""
    from kubm.evaluation.summary import update_readme, write_summary

    s = write_summary(evals, out)
    if readme is not None:
        update_readme(readme, s, str(out.with_suffix(".json")))
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}: {len(s['tasks'])} tasks, methods {s['methods']}")


@app.command()
def report(
    evals: Annotated[list[Path], typer.Argument(help="eval.json files: each task's, and perturbed/eval.json where "
                                                     "a task has a perturbation")],
    out: Annotated[Path, typer.Option(help="report.md to write (report.json and <stem>_plots/ go beside it)")] = Path(
        "results/report.md"),
) -> None:
    """The paper's claims against the committed metrics: verdicts with intervals, tables and the flow-error plot."""
    from kubm.evaluation.claims import write_report

    rep = write_report(evals, out)
    typer.echo(f"wrote {out}: " + "; ".join(f"claim {k}: {v}" for k, v in rep["verdicts"].items()))


@app.command()
def doctor(configfile: ConfigFiles = None) -> None:
    """Preflight: rendering backends, SAPIEN's Vulkan device, versions, disk, model weights."""
    from kubm.doctor import main as doctor_main

    config = None
    if configfile or DEFAULT_CONFIG.is_file():
        config = _load(configfile)
    raise typer.Exit(doctor_main(config))


@app.command()
def info(store: Annotated[Path, typer.Argument(help="a .zarr store written by a kubm stage")],
         verify: Annotated[bool, typer.Option(help="decode every chunk (exit 2 on damage)")] = False) -> None:
    """Describe a store: episodes, arrays, stored chunks, provenance."""
    from kubm.storage.episode_store import describe

    typer.echo(describe(store, verify=verify))


@app.command("check-config")
def check_config(configfile: ConfigFiles = None) -> None:
    """Validate the config and print the resolved tasks."""
    from kubm.config import all_tasks

    config = _load(configfile)
    for suite, task in all_tasks(config):
        tc = resolve_task(config, suite, task)
        typer.echo(f"{tc.id}: expert={tc.settings['expert']['name']} horizon={tc.settings['horizon']} "
                   f"demos={tc.settings['n_demos']} hash={tc.hash()}")


@app.command("dvc-yaml")
def dvc_yaml(
    check: Annotated[bool, typer.Option(help="only check that dvc.yaml is in step with the workflow")] = False,
    profile: Annotated[Optional[list[str]], typer.Option(
        "--profile", "-c", help="config profile(s) over config/config.yaml (default: the reported study profile)")] = None,
    path: Path = Path("dvc.yaml"),
) -> None:
    """Write dvc.yaml from the Snakemake workflow (one stage per job), or check it is current."""
    from kubm.dvc_stages import REPORTED_PROFILES, render_dvc_yaml

    profiles = list(REPORTED_PROFILES) if profile is None else [p for p in profile if Path(p) != DEFAULT_CONFIG]
    text = render_dvc_yaml(Path.cwd(), profiles)
    if check:
        if not path.is_file() or path.read_text() != text:
            _fail(f"{path} is out of step with the workflow; run `kubm dvc-yaml` and commit it", code=1)
        typer.echo(f"{path} is in step")
        return
    path.write_text(text)
    typer.echo(f"wrote {path}")


@app.command()
def pull(
    tasks: Annotated[Optional[list[str]], typer.Argument(help="suite/task to pull (default: every locked task)")] = None,
    all_stages: Annotated[bool, typer.Option("--all", help="also raw demos, masks, tracks and models")] = False,
    remote: Annotated[Optional[str], typer.Option("-r", "--remote", help="DVC remote (default: the default remote)")] = None,
) -> None:
    """Fetch what dvc.lock records (features and flow AE by default) and check `dvc status` is clean."""
    from kubm.dvc_pull import DEFAULT_RULES, locked_stages
    from kubm.dvc_pull import pull as run_pull

    stages = locked_stages(Path.cwd(), None if all_stages else DEFAULT_RULES, tasks)
    done = run_pull(Path.cwd(), stages, remote)
    typer.echo(f"pulled {len(stages)} stage(s) from {done['remote']} ({done['url']}); every output is as dvc.lock records it")
    if done["upstream_not_pulled"]:
        typer.echo(f"not pulled (upstream data, `kubm pull --all` fetches it): {len(done['upstream_not_pulled'])} path(s)")
    if done["deps_changed_since_lock"]:
        typer.secho(f"warning: changed since dvc.lock was written: {done['deps_changed_since_lock'][:5]}"
                    f"{' ...' if len(done['deps_changed_since_lock']) > 5 else ''}", fg=typer.colors.YELLOW, err=True)


if __name__ == "__main__":
    sys.exit(app())
