"""dvc.yaml, derived from the Snakemake workflow itself, so the DAG is described once.

Snakemake builds the full DAG of every target of the active config (as in a fresh clone,
where nothing is built yet), and each job becomes one DVC stage:

- outputs, inputs and the rule's file come from the job;
- params are the config keys the job's params trigger hashes (kubm.config.rule_config_keys;
  the job's own hash is checked against them), listed per config file that holds them;
- code dependencies are the source files the job's `kubm` command can run
  (kubm.code_deps), not all of ``src/kubm``;
- each stage's command asks Snakemake for that one output, so `dvc repro` and `snakemake`
  run the same code.

`kubm dvc-yaml --check` and the tests keep the committed dvc.yaml in step.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubm import code_deps
from kubm.config import load_config, rule_config_hash, rule_config_keys
from kubm.errors import ConfigError

# Outputs kept in git as DVC metrics (cache: false): each task's eval.json and the
# cross-task summary and report, so `dvc metrics diff` compares commits and the README's tables come
# from committed files. The summary's plots are DVC plots.
METRIC_OUTPUT = re.compile(r"^results/(\w+/\w+/(perturbed/)?eval\.json|summary\.json|report\.json)$")
PLOT_OUTPUT = re.compile(r"^results/(summary|report)_plots$")
# the generated tables, committed beside the metrics
GIT_OUTPUT = re.compile(r"^results/(summary|report)\.md$")
# The profile the committed dvc.yaml and dvc.lock describe: the reported study.
REPORTED_PROFILES = ("config/study.yaml",)
SHARED_CODE = ("Snakefile", "workflow/rules/common.smk", "src/kubm/schemas")
WILDCARD_ORDER = ("suite", "task", "method", "split", "seed")


@dataclass(frozen=True)
class Job:
    """One Snakemake job, as DVC needs it."""

    rule: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    wildcards: dict
    config_hash: str | None
    command: str | None  # the kubm sub-command its shell runs
    rule_file: str

    @property
    def stage_name(self) -> str:
        # DVC stage names may not hold '/' or '@' (its foreach syntax).
        parts = [f"seed{self.wildcards[k]}" if k == "seed" else self.wildcards[k]
                 for k in WILDCARD_ORDER if k in self.wildcards]
        return "-".join([self.rule, *parts])


def workflow_jobs(root: Path, profiles: list[str]) -> list[Job]:
    """Every job Snakemake would run for the default targets under config.yaml + ``profiles``,
    planned in an empty workspace (so a pulled or half-built workspace changes nothing)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings)

    root = root.resolve()
    configfiles = [Path("config/config.yaml"), *(Path(p) for p in profiles)]
    with tempfile.TemporaryDirectory(prefix="kubm-dag-") as tmp, _chdir(Path(tmp)):
        (Path(tmp) / "config").symlink_to(root / "config")
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf = api.workflow(resource_settings=ResourceSettings(cores=1),
                              config_settings=ConfigSettings(configfiles=configfiles),
                              snakefile=root / "Snakefile", workdir=Path(tmp))
            wf.dag(DAGSettings())
            workflow = wf._workflow  # the API has no public job listing
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            jobs = [_job(j, root) for j in workflow.dag.jobs if j.rule.name != "all"]
    return sorted(jobs, key=lambda j: j.stage_name)


@contextlib.contextmanager
def _chdir(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _job(job, root: Path) -> Job:
    shell = job.shellcmd or ""
    found = re.search(r"/kubm\s+([\w-]+)|^kubm\s+([\w-]+)", shell)
    return Job(
        rule=job.rule.name,
        outputs=tuple(str(o) for o in job.output),
        inputs=tuple(str(i) for i in job.input),
        wildcards=dict(job.wildcards.items()),
        config_hash=dict(job.params.items()).get("config_hash"),
        command=(found.group(1) or found.group(2)) if found else None,
        rule_file=str(Path(job.rule.snakefile).resolve().relative_to(root)),
    )


def job_params(job: Job, config: dict) -> list[str]:
    """The config keys a job reads; its Snakemake params hash must be a hash of them."""
    w = job.wildcards
    keys = rule_config_keys(job.rule, w.get("suite"), w.get("task"), w.get("method")) if "suite" in w else []
    if job.config_hash is not None:
        expected = rule_config_hash(config, job.rule, w["suite"], w["task"], w.get("method"))
        if job.config_hash != expected:
            raise ConfigError(f"rule {job.rule}: its params hash is not kubm.config.rule_config_hash "
                              f"(workflow/rules/{job.rule}.smk must use config_hash({job.rule!r}))")
    elif keys:
        raise ConfigError(f"rule {job.rule} reads config keys {keys} but has no config_hash param; "
                          "Snakemake would not rerun it when they change")
    return keys


def job_code(job: Job, root: Path) -> list[str]:
    """The code a job runs: its rule file, the shared workflow files and the source files its
    kubm command (and, for a method's job, that method's package) can import."""
    from kubm.policies.registry import METHODS

    files = set(code_deps.command_files(job.command, root)) if job.command else set()
    # Config validation imports every method's typed config; a method's job runs its own package.
    modules = [spec.config.split(":")[0] for spec in METHODS.values()]
    if "method" in job.wildcards:
        spec = METHODS[job.wildcards["method"]]
        modules += [spec.fit.split(":")[0], spec.policy.split(":")[0]]
    files |= {str(f.relative_to(root)) for m in modules for f in code_deps.closure(m)}
    return [job.rule_file, *SHARED_CODE, *sorted(files)]


def _has_key(doc: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


@functools.lru_cache(maxsize=None)
def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _params(keys: list[str], files: list[Path], root: Path) -> list[dict]:
    """DVC params per config file: each key under every file that sets it (a profile holds
    only what it changes, so DVC watches the key wherever it can come from)."""
    out = []
    for f in files:
        doc = _yaml(root / f)
        present = [k for k in keys if _has_key(doc, k)]
        if present:
            out.append({str(f): present})
    return out


def _outputs(outputs: tuple[str, ...]) -> dict:
    entries: dict[str, list] = {}
    for o in outputs:
        if METRIC_OUTPUT.match(o):
            entries.setdefault("metrics", []).append({o: {"cache": False}})
        elif GIT_OUTPUT.match(o):
            entries.setdefault("outs", []).append({o: {"cache": False}})
        elif PLOT_OUTPUT.match(o):
            entries.setdefault("plots", []).append({o: {"cache": False}})
        else:
            entries.setdefault("outs", []).append(o)
    return entries


def render_dvc_yaml(root: Path, profiles: list[str]) -> str:
    root = root.resolve()
    files = [Path("config/config.yaml"), *(Path(p) for p in profiles)]
    config = load_config([root / f for f in files])
    profile_args = "".join(f" --configfile {p}" for p in profiles)
    stages = {}
    for job in workflow_jobs(root, profiles):
        params = _params(job_params(job, config), files, root)
        stages[job.stage_name] = {
            "cmd": f"snakemake --cores all --allowed-rules {job.rule}{profile_args} -- {' '.join(job.outputs[:1])}",
            "deps": [*job.inputs, *job_code(job, root)],
            **({"params": params} if params else {}),
            **_outputs(job.outputs),
        }
    source = " + ".join(str(f) for f in files)
    header = (f"# Generated by `kubm dvc-yaml{''.join(f' -c {p}' for p in profiles)}` from the Snakemake "
              f"workflow under {source}; do not edit by hand.\n")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def expected_outputs(root: Path, profiles: list[str]) -> list[tuple[str, str]]:
    """(rule, output) of every stage, for tests comparing with `snakemake --summary`."""
    return [(j.rule, o) for j in workflow_jobs(root, profiles) for o in j.outputs]

