"""dvc.yaml, generated from the config so DVC tracks exactly what the Snakemake rules write.

One DVC stage per rule output. Each stage's command asks Snakemake for that one
output, so `dvc repro` and `snakemake` run the same code. `kubm dvc-yaml --check`
(and a test comparing against `snakemake --summary`) keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from kubm.config import SPLITS, all_tasks, method_seeds, target_tasks, task_methods


@dataclass(frozen=True)
class RuleOutputs:
    rule: str
    output: str  # template over suite, task, split, seed
    inputs: tuple[str, ...]
    per_split: bool = False
    per_seed: bool = False
    per_method: bool = False
    params: tuple[str, ...] = ()  # top-level config keys besides the task's suite
    extra_outputs: tuple[str, ...] = ()  # metrics and QC videos written beside the main output
    metric: bool = False  # the main output is a DVC metric kept in git (cache: false)


# Mirrors workflow/rules/*.smk (outputs and inputs).
RULES: tuple[RuleOutputs, ...] = (
    RuleOutputs("collect", "data/{suite}/{task}/demos/{split}.zarr", (), per_split=True),
    RuleOutputs("segment", "data/{suite}/{task}/masks/{split}.zarr", ("data/{suite}/{task}/demos/{split}.zarr",),
                per_split=True, params=("segment", "weights"),
                extra_outputs=("results/{suite}/{task}/qc/segment_{split}.metrics.json",
                               "results/{suite}/{task}/qc/segment_{split}.mp4")),
    RuleOutputs("track", "data/{suite}/{task}/tracks/{split}.zarr",
                ("data/{suite}/{task}/demos/{split}.zarr", "data/{suite}/{task}/masks/{split}.zarr"),
                per_split=True, params=("track", "weights"),
                extra_outputs=("results/{suite}/{task}/qc/track_{split}.metrics.json",
                               "results/{suite}/{task}/qc/track_{split}.mp4")),
    RuleOutputs("train_ae", "models/{suite}/{task}/flow_ae",
                ("data/{suite}/{task}/tracks/train.zarr", "data/{suite}/{task}/tracks/test.zarr"), params=("train_ae",)),
    RuleOutputs("encode", "data/{suite}/{task}/features/{split}.zarr",
                ("data/{suite}/{task}/demos/{split}.zarr", "data/{suite}/{task}/tracks/{split}.zarr",
                 "data/{suite}/{task}/masks/{split}.zarr", "models/{suite}/{task}/flow_ae"), per_split=True),
    RuleOutputs("fit", "models/{suite}/{task}/{method}/seed{seed}",
                ("data/{suite}/{task}/features/train.zarr", "data/{suite}/{task}/features/test.zarr",
                 "models/{suite}/{task}/flow_ae"), per_seed=True, per_method=True, params=("fit.{method}",)),
    RuleOutputs("evaluate_method", "results/{suite}/{task}/methods/{method}.json",
                ("models/{suite}/{task}/flow_ae", "data/{suite}/{task}/features/test.zarr"), per_method=True,
                params=("fit.{method}", "evaluate", "segment", "track", "weights"),
                extra_outputs=("results/{suite}/{task}/methods/{method}",)),
    RuleOutputs("merge_eval", "results/{suite}/{task}/eval.json", (), metric=True),
)
RULE_FILES = {"evaluate_method": "evaluate", "merge_eval": "evaluate", "summary": "evaluate"}  # rules that share a .smk file

CODE_DEPS = ("src/kubm", "Snakefile", "workflow/rules/common.smk")


def expected_outputs(config: dict) -> list[tuple[str, str]]:
    """(rule, output) for every rule output of every configured task."""
    return [(rule, o) for rule, out, (r, *_, extras) in _instances(config) for o in (out, *extras)]


def _instances(config: dict):
    for suite, task in all_tasks(config):
        methods = task_methods(config, suite, task)
        for r in RULES:
            splits = SPLITS if r.per_split else (None,)
            for split in splits:
                for method in (methods if r.per_method else (None,)):
                    for seed in (method_seeds(config, method) if r.per_seed else (None,)):
                        fmt = dict(suite=suite, task=task, split=split, seed=seed, method=method)
                        inputs = [i.format(**fmt) for i in r.inputs]
                        if r.rule == "evaluate_method":
                            inputs = [f"models/{suite}/{task}/{method}/seed{k}" for k in method_seeds(config, method)] + inputs
                        if r.rule == "merge_eval":
                            inputs = [f"results/{suite}/{task}/methods/{m}.json" for m in methods]
                        # DVC stage names may not hold '/' or '@' (its foreach syntax).
                        suffix = split if r.per_split else (f"seed{seed}" if r.per_seed else None)
                        name = "-".join(p for p in (r.rule, suite, task, method, suffix) if p)
                        extras = [e.format(**fmt) for e in r.extra_outputs]
                        params = [f"suites.{suite}", *(p.format(**fmt) for p in r.params)]
                        yield r.rule, r.output.format(**fmt), (params, inputs, name, extras)
    # The cross-task comparison over the target tasks (rule summary).
    evals = [f"results/{s}/{t}/eval.json" for s, t in target_tasks(config)]
    yield "summary", "results/summary.md", ([], evals, "summary", ["results/summary.json", "results/summary_plots"])


# Outputs committed to git as DVC metrics (cache: false): each task's eval.json and the
# cross-task summary, so `dvc metrics diff` compares commits and the README's tables come
# from committed files.
METRIC_RULES = {r.rule for r in RULES if r.metric} | {"summary"}
SUMMARY_METRIC = "results/summary.json"


def _stage_outputs(rule: str, out: str, extras: list[str]) -> dict:
    if rule == "summary":
        return {"outs": [{out: {"cache": False}}, *[e for e in extras if e != SUMMARY_METRIC]],
                "metrics": [{SUMMARY_METRIC: {"cache": False}}]}
    if rule in METRIC_RULES:
        return {"metrics": [{out: {"cache": False}}], **({"outs": extras} if extras else {})}
    return {"outs": [out, *extras]}


def render_dvc_yaml(config: dict) -> str:
    stages = {}
    for rule, out, (params, inputs, name, extras) in _instances(config):
        stages[name] = {
            "cmd": f"snakemake --cores all --allowed-rules {rule} -- {out}",
            "deps": [*inputs, f"workflow/rules/{RULE_FILES.get(rule, rule)}.smk", *CODE_DEPS],
            **({"params": [{"config/config.yaml": params}]} if params else {}),
            **_stage_outputs(rule, out, extras),
        }
    header = "# Generated by `kubm dvc-yaml` from config/config.yaml; do not edit by hand.\n"
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)
