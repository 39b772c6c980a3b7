"""The smoke DAG submitted to a real SLURM cluster with the workflow/profiles/slurm profile.

The cluster is the single node scripts/slurm/up.sh brings up on this machine (slurmctld,
slurmd, slurmdbd with MariaDB, munge): every job goes through sbatch, runs under srun on the
node, and the plugin reads its state with sacct. Opt in: KUBM_SLURM=1 or `-m slurm`
(`make test-slurm` brings the cluster up, then does both); a plain pytest run skips it.
"""

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import check_smoke_eval, copy_project, run

pytestmark = pytest.mark.slurm

SMOKE = ["--configfile", "config/smoke.yaml"]
EVAL = "results/adroit/relocate/eval.json"
STATE = Path(os.environ.get("KUBM_SLURM_STATE", "/var/tmp/kubm-slurm"))
ACCOUNT = os.environ.get("KUBM_SLURM_ACCOUNT", "kubm")
PARTITION = os.environ.get("KUBM_SLURM_PARTITION", "kubm")
# The 1-node test cluster answers at once: poll sacct after 5 s instead of the profile's 40 s.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "5"]


def _opted_in(config) -> bool:
    if os.environ.get("KUBM_SLURM") == "1":
        return True
    markexpr = config.getoption("markexpr", default="") or ""
    return re.search(r"(?<!not )\bslurm\b", markexpr) is not None


@pytest.fixture(scope="module")
def slurm_env(request):
    """The environment SLURM's clients need (SLURM_CONF of the up.sh cluster unless one is set),
    after checking that the controller, the node and accounting answer."""
    if not _opted_in(request.config):
        pytest.skip("needs a SLURM cluster: opt in with KUBM_SLURM=1 or -m slurm (make test-slurm starts one)")
    env = {}
    if "SLURM_CONF" not in os.environ and (STATE / "etc/slurm.conf").is_file():
        env["SLURM_CONF"] = str(STATE / "etc/slurm.conf")
    missing = [t for t in ("sinfo", "sbatch", "sacct", "sacctmgr") if shutil.which(t) is None]
    assert not missing, f"SLURM client tools missing: {missing}; run `bash scripts/slurm/up.sh`"

    sinfo = run(["sinfo", "-h", "-o", "%P|%a|%T|%c|%m"], env=env, check=False)
    assert sinfo.returncode == 0, f"sinfo does not answer ({sinfo.stderr.strip()}); run `bash scripts/slurm/up.sh`"
    rows = [line.split("|") for line in sinfo.stdout.split()]
    usable = [r for r in rows if r[0].rstrip("*") == PARTITION and r[1] == "up"
              and r[2].startswith(("idle", "mix", "alloc", "completing"))]
    assert usable, f"no usable node in partition {PARTITION!r}:\n{sinfo.stdout}"

    sacct = run(["sacct", "-n", "-X", "-S", "now-1hours"], env=env, check=False)
    assert sacct.returncode == 0, f"sacct does not answer (slurmdbd accounting): {sacct.stderr.strip()}"
    assoc = run(["sacctmgr", "-n", "-P", "show", "assoc", "format=account"], env=env).stdout.split()
    assert ACCOUNT in assoc, f"account {ACCOUNT!r} has no associations in slurmdbd: {assoc}"
    return env


@pytest.fixture(scope="module")
def slurm_run(slurm_env, tmp_path_factory):
    proj = copy_project(tmp_path_factory.mktemp("slurm") / "proj")
    planned = run(["snakemake", "-n", "--quiet", "rules", "--cores", "1", *SMOKE], cwd=proj).stdout
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", planned, flags=re.M) if rule != "total"}
    proc = run(["snakemake", "--profile", "workflow/profiles/slurm", *SMOKE, *FAST_POLL],
               cwd=proj, env=slurm_env, timeout=3600)
    return proj, jobs, proc, slurm_env


def _sacct_jobs(run_id: str, env: dict) -> list[dict]:
    fields = ["JobIDRaw", "JobName", "State", "Comment", "Account", "Partition", "AllocCPUS", "ReqMem", "Timelimit"]
    out = run(["sacct", "-X", "-n", "-P", "--name", run_id, "-S", "now-1days", "-E", "now",
               f"--format={','.join(fields)}"], env=env).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def test_every_job_went_through_sbatch(slurm_run):
    """sacct (slurmdbd) lists one completed job per planned rule job, named by the plugin's run
    id, commented rule_<rule>_wildcards_<...>, under the profile's account and partition."""
    proj, planned, proc, env = slurm_run
    log = proc.stdout + proc.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, log
    jobs = _sacct_jobs(run_id.group(1), env)
    assert jobs, f"sacct lists no job named {run_id.group(1)}"
    rules = Counter(re.match(r"rule_(.+?)(?:_wildcards_|$)", j["Comment"]).group(1) for j in jobs)
    # rule all has no shell command: Snakemake finishes it itself, nothing to submit.
    assert rules == Counter({r: n for r, n in planned.items() if r != "all"}), (rules, planned)
    assert {j["State"] for j in jobs} == {"COMPLETED"}, jobs
    assert {j["Account"] for j in jobs} == {ACCOUNT} and {j["Partition"] for j in jobs} == {PARTITION}, jobs
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert sorted(submitted) == sorted(j["JobIDRaw"] for j in jobs), (submitted, jobs)


def test_profile_resources_reach_sbatch(slurm_run):
    """Threads, memory and runtime per rule (profile set-threads / set-resources over the rules'
    resources: blocks) are what SLURM allocated."""
    proj, _, proc, env = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)
    by_rule = {}
    for j in _sacct_jobs(run_id, env):
        by_rule.setdefault(re.match(r"rule_(.+?)(?:_wildcards_|$)", j["Comment"]).group(1), j)
    expect = {  # rule: (cpus, mem, time limit)
        "fit": ("2", "4000M", "04:00:00"),
        "train_ae": ("2", "4000M", "01:00:00"),
        "collect": ("1", "4000M", "01:00:00"),
        "evaluate_method": ("1", "4000M", "03:00:00"),
        "encode": ("1", "2000M", "00:30:00"),  # default-resources mem_mb, the rule's runtime
        "summary": ("1", "2000M", "00:10:00"),
    }
    got = {r: (by_rule[r]["AllocCPUS"], by_rule[r]["ReqMem"], by_rule[r]["Timelimit"]) for r in expect}
    assert got == expect


def test_slurm_run_reaches_eval_json(slurm_run):
    """The same checks as test_smoke.py's test_smoke_reaches_eval_json, on the SLURM run."""
    proj, _, _, _ = slurm_run
    check_smoke_eval(proj, EVAL, SMOKE)
    assert "adroit/relocate" in (proj / "results/summary.md").read_text()
