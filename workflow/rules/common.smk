# Config validation, wildcard constraints and helpers shared by every rule.
import shutil
import sys
from pathlib import Path

from kubm import config as kcfg

# `--configfile` takes several values, so a target written after it is read as a config.
if {"protocol", "methods"} <= set(config):
    raise WorkflowError(
        "a results file (eval.json) was read as a config file: --configfile takes several values, "
        "so put targets before it: snakemake results/adroit/relocate/eval.json --cores all --configfile PROFILE"
    )

try:
    config = kcfg.validate(config)
except kcfg.ConfigError as err:
    raise WorkflowError(str(err))

# The kubm commands read the same config files Snakemake merged: config.yaml, then
# every --configfile in order. --config KEY=VALUE overrides never reach them, so refuse
# those rather than run stages on a config that differs from Snakemake's.
CONFIGFILES = ["config/config.yaml"] + [
    str(f) for f in workflow.overwrite_configfiles if Path(f).resolve() != Path("config/config.yaml").resolve()
]
if kcfg.load_config(CONFIGFILES) != config:
    raise WorkflowError(
        "--config KEY=VALUE overrides are not passed to kubm commands; put them in a YAML file "
        "and pass it with --configfile (see config/smoke.yaml)"
    )
CONFIG_ARGS = " ".join(f"--configfile {f}" for f in CONFIGFILES)

# Use the kubm that belongs to this Python, so `.venv/bin/snakemake` works unactivated.
KUBM = shutil.which("kubm", path=str(Path(sys.executable).parent)) or "kubm"

SUITES = sorted(config["suites"])
TASKS = sorted({t for s in SUITES for t in config["suites"][s]["tasks"]})


wildcard_constraints:
    suite="|".join(SUITES),
    task="|".join(TASKS),
    split="train|test",
    seed=r"\d+",
    method="|".join(kcfg.method_names()),


def fit_seeds(method):
    return kcfg.method_seeds(config, method)


def all_targets():
    return [f"results/{s}/{t}/eval.json" for s, t in kcfg.target_tasks(config)]


def perturbed_targets():
    """The perturbed protocol's results of the target tasks that configure a perturbation."""
    return [f"results/{s}/{t}/perturbed/eval.json" for s, t in kcfg.target_tasks(config)
            if kcfg.resolve_task(config, s, t).settings.get("perturbation")]


def task_methods(wildcards):
    return kcfg.task_methods(config, wildcards.suite, wildcards.task)


def config_hash(rule):
    """A params value that changes exactly when what a job of `rule` reads from the config
    changes (Snakemake's params trigger). kubm.config.rule_config_keys lists those keys,
    and DVC's params of the same stage are generated from it."""
    return lambda w: kcfg.rule_config_hash(config, rule, w.suite, w.task, w.get("method"))


def pulled_or(output, **inputs):
    """Inputs of a stage whose output may come from `dvc pull` without its upstream data.

    When the output exists and some upstream input is missing, the output is a fetched
    cache: the job gets no inputs, so Snakemake keeps it instead of re-collecting,
    re-segmenting and re-tracking. `--forcerun` on the rule still rebuilds it (and
    then needs the upstream data). A cache built under another config is refused by the
    stages that read it (kubm.stages.lineage), with the fix in the message.
    """

    def fn(wildcards):
        fmt = dict(wildcards.items())
        paths = {k: v.format(**fmt) for k, v in inputs.items()}
        if Path(output.format(**fmt)).exists() and not all(Path(p).exists() for p in paths.values()):
            return {}
        return paths

    return fn
