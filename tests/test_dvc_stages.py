"""dvc.yaml is derived from the Snakemake workflow: its params name exactly what each job's
Snakemake params trigger hashes, and its code deps are the files each job can run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubm import code_deps
from kubm import config as kcfg
from kubm.dvc_stages import REPORTED_PROFILES, job_code, job_params, render_dvc_yaml, workflow_jobs

ROOT = Path(__file__).resolve().parents[1]


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*prefix, str(k)))
    else:
        yield prefix


def _perturbed(config: dict, path: tuple[str, ...]):
    """config with one leaf changed to another value of the same kind, or None when the
    change makes the config invalid for this check (a seed budget, a method list)."""
    out = copy.deepcopy(config)
    node = out
    for k in path[:-1]:
        node = node[k]
    v = node[path[-1]]
    if isinstance(v, bool):
        node[path[-1]] = not v
    elif isinstance(v, (int, float)):
        node[path[-1]] = v + 1
    elif isinstance(v, str):
        node[path[-1]] = v + "_x"
    elif isinstance(v, list):
        node[path[-1]] = [*v, v[-1]] if v else [1]
    else:
        node[path[-1]] = 1
    return out


def _covered(path: tuple[str, ...], keys: list[str]) -> bool:
    dotted = ".".join(path)
    return any(dotted == k or dotted.startswith(k + ".") for k in keys)


@pytest.mark.parametrize("suite,task,method", [("adroit", "relocate", "kubm"), ("dexart", "bucket", "act")])
def test_params_name_exactly_what_the_snakemake_trigger_hashes(suite, task, method):
    """Perturb every leaf of the config: a job's rule_config_hash changes iff the leaf lies
    under one of its rule_config_keys (so DVC and Snakemake rerun the same stages)."""
    config = kcfg.load_config([ROOT / "config/config.yaml", *(ROOT / p for p in REPORTED_PROFILES)])
    leaves = list(_leaves(config))
    assert len(leaves) > 100
    for rule in kcfg.PARAM_RULES:
        keys = kcfg.rule_config_keys(rule, suite, task, method)
        before = kcfg.rule_config_hash(config, rule, suite, task, method)
        for path in leaves:
            changed = _perturbed(config, path)
            try:
                after = kcfg.rule_config_hash(changed, rule, suite, task, method)
            except (kcfg.ConfigError, KeyError, TypeError):
                continue  # the change broke the config; the schema reports that elsewhere
            assert (after != before) == _covered(path, keys), (rule, ".".join(path))


@pytest.fixture(scope="module")
def reported_jobs():
    return workflow_jobs(ROOT, list(REPORTED_PROFILES))


def test_every_job_that_reads_the_config_has_its_params(reported_jobs):
    config = kcfg.load_config([ROOT / "config/config.yaml", *(ROOT / p for p in REPORTED_PROFILES)])
    rules = {j.rule for j in reported_jobs}
    assert set(kcfg.PARAM_RULES) <= rules
    for job in reported_jobs:
        keys = job_params(job, config)  # raises when the job's hash and its keys disagree
        assert bool(keys) == (job.rule in kcfg.PARAM_RULES), job.stage_name


def test_a_hash_that_disagrees_with_the_keys_is_refused(reported_jobs):
    config = kcfg.load_config([ROOT / "config/config.yaml"])
    job = next(j for j in reported_jobs if j.rule == "segment")
    wrong = type(job)(**{**job.__dict__, "config_hash": "0" * 16})
    with pytest.raises(kcfg.ConfigError, match="config_hash"):
        job_params(wrong, config)


def test_code_deps_are_the_files_each_job_can_run(reported_jobs):
    by_name = {j.stage_name: j for j in reported_jobs}
    collect = job_code(by_name["collect-adroit-relocate-train"], ROOT)
    fit_kubm = job_code(by_name["fit-adroit-relocate-kubm-seed0"], ROOT)
    evaluate = job_code(by_name["evaluate_method-adroit-relocate-diffusion"], ROOT)
    assert "src/kubm/stages/collect.py" in collect and "src/kubm/sim/adroit.py" in collect
    assert not any("evaluation/" in f or "modeling_" in f or "fitting_" in f for f in collect)
    assert "src/kubm/policies/kubm/fitting_kubm.py" in fit_kubm
    assert not any("diffusion/modeling" in f or "sim/adroit" in f for f in fit_kubm)
    assert "src/kubm/policies/diffusion/modeling_diffusion.py" in evaluate
    assert "src/kubm/stages/evaluate.py" in evaluate
    for files in (collect, fit_kubm, evaluate):
        assert all((ROOT / f).exists() for f in files)
        assert "src/kubm" not in files  # no stage depends on the whole package


def test_code_deps_follow_imports_inside_functions(tmp_path):
    """The CLI imports each stage inside its command function: those imports count."""
    files = code_deps.command_files("merge-eval", ROOT)
    assert "src/kubm/evaluation/merge.py" in files
    assert "src/kubm/stages/collect.py" not in files
    with pytest.raises(ValueError, match="not a command"):
        code_deps.command_files("no-such-command", ROOT)


@pytest.mark.parametrize("profile", [[], ["config/smoke.yaml"], ["config/smoke_dexart.yaml"]])
def test_dvc_yaml_renders_for_every_profile(profile):
    doc = yaml.safe_load(render_dvc_yaml(ROOT, profile))
    stages = doc["stages"]
    assert stages, profile
    for name, stage in stages.items():
        assert stage["cmd"].startswith("snakemake --cores all --allowed-rules ")
        assert all(p in stage["cmd"] for p in profile)
        for entry in stage.get("params", []):
            for f, keys in entry.items():
                raw = yaml.safe_load((ROOT / f).read_text())
                for k in keys:
                    node = raw
                    for part in k.split("."):
                        node = node[part]  # every listed key exists in the file it is listed under


def test_metrics_and_plots_are_uncached():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert doc["merge_eval-adroit-relocate"]["metrics"] == [{"results/adroit/relocate/eval.json": {"cache": False}}]
    assert {"results/summary.json": {"cache": False}} in doc["summary"]["metrics"]
    assert {"results/summary_plots": {"cache": False}} in doc["summary"]["plots"]
