"""The Snakemake DAG: dry runs, lint, and that dvc.yaml tracks exactly the rules' outputs."""

import re

import pytest

from kubm.config import load_config
from kubm.dvc_stages import expected_outputs

from conftest import run


def test_dry_run_resolves_eval_for_every_task(root):
    proc = run(["snakemake", "-n", "--forceall", "--quiet", "rules", "--cores", "1"])  # independent of data/ here
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    # 8 tasks x 2 splits for per-split stages, 8 x 5 seeds for fit, 8 evaluations.
    assert counts == {"collect": "16", "segment": "16", "track": "16", "train_ae": "8",
                      "encode": "16", "fit": "40", "evaluate": "8", "all": "1", "total": "121"}


def test_dry_run_single_target(root):
    proc = run(["snakemake", "-n", "--cores", "1", "results/dexart/bucket/eval.json"])
    assert "results/dexart/bucket/eval.json" in proc.stdout


def test_unknown_task_target_fails(root):
    proc = run(["snakemake", "-n", "--cores", "1", "results/adroit/drawer/eval.json"], check=False)
    assert proc.returncode != 0


def test_config_override_via_cli_is_refused(root):
    proc = run(["snakemake", "-n", "--cores", "1", "--config", "targets=[adroit/door]"], check=False)
    assert proc.returncode != 0
    assert "--configfile" in proc.stdout + proc.stderr


def test_lint_only_complains_about_envs(root):
    proc = run(["snakemake", "--lint", "--cores", "1"], check=False)
    lints = re.findall(r"^\s+\* (.+?):?$", proc.stdout + proc.stderr, flags=re.M)
    assert lints, "expected the conda/container advisory"
    assert all(l.startswith("Specify a conda environment or container") for l in lints), lints


@pytest.mark.parametrize("profile", [[], ["config/smoke.yaml"]])
def test_dvc_stages_match_snakemake_outputs(root, profile):
    args = ["snakemake", "--summary", "--cores", "1"] + [x for p in profile for x in ("--configfile", p)]
    lines = run(args).stdout.strip().splitlines()
    header = lines.index(next(l for l in lines if l.startswith("output_file")))
    planned = {(l.split("\t")[2], l.split("\t")[0]) for l in lines[header + 1:]}
    cfg = load_config([root / "config/config.yaml", *[root / p for p in profile]])
    ours = set(expected_outputs(cfg))
    if profile:  # smoke builds only its targets; DVC lists every task
        assert planned <= ours
    else:
        assert planned == ours
