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
    # 8 tasks x 2 splits for per-split stages; 8 tasks x 3 default methods x 5 seeds for fit,
    # 8 x 3 method evaluations, 8 merges, one cross-task summary; the perturbed protocol on the
    # two tasks that configure a perturbation (door, relocate), and the report.
    assert counts == {"collect": "16", "segment": "16", "track": "16", "train_ae": "8", "encode": "16",
                      "fit": "120", "evaluate_method": "24", "merge_eval": "8", "summary": "1",
                      "evaluate_perturbed": "2", "report": "1", "all": "1", "total": "229"}


def test_study_profile_adds_diffusion_and_act(root):
    proc = run(["snakemake", "results/dexart/bucket/eval.json", "-n", "--forceall", "--quiet", "rules", "--cores", "1",
                "--configfile", "config/study.yaml"])
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    # 5 seeds of kubm, kodex and regression; 3 of diffusion and act (fit.n_seeds_by_method)
    assert counts["fit"] == "21" and counts["evaluate_method"] == "5" and counts["merge_eval"] == "1"


def test_unknown_method_in_config_lists_valid_ones(root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("suites: {adroit: {tasks: {door: {methods: [kubm, dp]}}}}\n")
    proc = run(["snakemake", "-n", "--cores", "1", "--configfile", str(bad)], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'dp' is not allowed" in out and "diffusion" in out and "act" in out


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


def test_a_target_after_configfile_gets_the_fix(root):
    """`--configfile P target` reads the target as a second config; the message says so."""
    proc = run(["snakemake", "-n", "--cores", "1", "--configfile", "config/smoke.yaml",
                "results/adroit/relocate/eval.json"], check=False)
    assert proc.returncode != 0
    assert "put targets before it" in proc.stdout + proc.stderr


def test_lint_only_complains_about_envs(root):
    proc = run(["snakemake", "--lint", "--cores", "1"], check=False)
    lints = re.findall(r"^\s+\* (.+?):?$", proc.stdout + proc.stderr, flags=re.M)
    assert lints, "expected the conda/container advisory"
    # CONFIG_ARGS (the config file paths) and KUBM (the venv's executable) are deliberately not
    # params: paths are not content,
    # and a new profile must not rerun every stage; the params' stage hashes track content.
    allowed = ("Specify a conda environment or container", "Shell command directly uses variable CONFIG_ARGS",
               "Shell command directly uses variable KUBM")
    assert all(l.startswith(allowed) for l in lints), lints


@pytest.mark.parametrize("profile", [[], ["config/smoke.yaml"], ["config/smoke_dexart.yaml"], ["config/study.yaml"]])
def test_dvc_stages_match_snakemake_outputs(root, profile):
    """The DVC stages (derived from Snakemake's DAG in an empty workspace) cover exactly what
    `snakemake --summary` lists for the same profile: a second view of the same DAG."""
    args = ["snakemake", "--summary", "--cores", "1"] + [x for p in profile for x in ("--configfile", p)]
    lines = run(args).stdout.strip().splitlines()
    header = lines.index(next(l for l in lines if l.startswith("output_file")))
    planned = {(l.split("\t")[2], l.split("\t")[0]) for l in lines[header + 1:]}
    assert planned == set(expected_outputs(root, profile))


def test_every_default_fit_stops_at_an_iteration_count(root):
    """No method's default fit depends on the wall clock (and so on the machine's load)."""
    for profile in ([], ["config/study.yaml"]):
        fit = load_config([root / "config/config.yaml", *[root / p for p in profile]])["fit"]
        methods = [m for m, c in fit.items() if isinstance(c, dict) and "iterations" in c]
        assert {"kubm", "diffusion", "act"} <= set(methods)
        for m in methods:
            assert fit[m].get("time_budget_s") is None and fit[m]["iterations"] > 0, (profile, m)


def test_eval_json_and_summary_are_uncached_metrics_in_git(root):
    """Each task's eval.json and summary.json are DVC metrics with cache: false, and git
    does not ignore them (the README's tables come from committed files)."""
    import subprocess

    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    merge = stages["merge_eval-adroit-relocate"]
    assert merge["metrics"] == [{"results/adroit/relocate/eval.json": {"cache": False}}]
    assert "outs" not in merge
    assert {"results/summary.json": {"cache": False}} in stages["summary"]["metrics"]
    for path, ignored in (("results/adroit/relocate/eval.json", False), ("results/summary.json", False),
                          ("results/adroit/relocate/perturbed/eval.json", False), ("results/report.md", False),
                          ("results/report.json", False), ("results/adroit/relocate/perturbed/videos/a.mp4", True),
                          ("results/adroit/relocate/methods/kubm.json", True)):
        rc = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode
        assert (rc == 0) == ignored, path
