import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubm.evaluation.report import TIMING_FIELDS, without_fields

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is fastest, and it does not spin against other jobs on 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(cmd: list[str], cwd: Path = ROOT, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run a command from the venv's bin, return the CompletedProcess (stdout+stderr text)."""
    exe = BIN / cmd[0]
    full = [str(exe) if exe.exists() else cmd[0], *cmd[1:]]
    proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_project(dest: Path) -> Path:
    """The project's tracked and unignored files copied to `dest` (no data/, models/, results/,
    and no dvc.lock)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.split("/", 1)[0] in ("data", "models", "results"):  # committed metrics are outputs, not sources
            continue
        if f == "dvc.lock":  # the study's lock describes outputs this copy never has: it starts unlocked
            continue
        src = ROOT / f
        if src.is_symlink() or src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dest / f)
            else:
                shutil.copy2(src, dest / f)
    return dest


# Fields of eval.json that measure the machine, not the result: timings, latencies, library
# versions, the commit, and config_hash (it hashes the models' config.json, which records
# their training wall time).
UNSTABLE_EVAL_KEYS = TIMING_FIELDS | {"versions", "git_revision", "config_hash"}


def stable_eval(doc):
    """eval.json without the fields in UNSTABLE_EVAL_KEYS: the same config and thread count
    must reproduce it exactly (tests/data/smoke_eval_*.json record it)."""
    return without_fields(doc, UNSTABLE_EVAL_KEYS)


def check_recorded_eval(doc: dict, name: str) -> None:
    """Compare with tests/data/<name>.json; KUBM_RECORD_EVAL=1 rewrites it (after a change that
    is meant to move results; say so in the commit)."""
    path = ROOT / "tests" / "data" / f"{name}.json"
    got = stable_eval(doc)
    if os.environ.get("KUBM_RECORD_EVAL") == "1":
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(path.read_text())
    assert got == recorded, (f"{name}: eval.json differs from {path} (beyond timing fields); if the change is "
                             "meant to move results, rerun with KUBM_RECORD_EVAL=1 and say so in the commit")


def check_smoke_eval(proj: Path, eval_path: str, smoke_args: list[str]) -> dict:
    """The smoke relocate run's eval.json is valid and complete, its AE and K-UBM fit left their
    metrics, and Snakemake has nothing left to do. Shared by the local and the SLURM smoke runs."""
    from kubm.evaluation.report import validate_eval

    doc = json.loads((proj / eval_path).read_text())
    validate_eval(doc)
    kubm = doc["methods"]["kubm"]
    assert doc["protocol"]["episodes"] == 2 and len(kubm["per_episode"]) == 2
    assert 0.0 <= kubm["success_rate"] <= 1.0 and kubm["latency_ms"]["policy"]["median"] > 0
    assert (proj / "models/adroit/relocate/flow_ae/metrics.json").is_file()
    assert (proj / "models/adroit/relocate/kubm/seed0/diagnostics.json").is_file()
    out = run(["snakemake", "-n", "--cores", "1", *smoke_args], cwd=proj).stdout
    assert "Nothing to be done" in out, out
    return doc


def check_rgb_skip_keeps_depth_and_seg(env, seed: int) -> None:
    """With ``render_rgb`` off (the evaluator with sim perception) a step has no colour image,
    and its depth and seg, all that sim tracking reads, equal those of the same step with it on."""
    import numpy as np

    first = env.reset(seed)
    with_rgb = env.step(first.qpos)
    env.reset(seed)
    env.render_rgb = False
    try:
        without = env.step(first.qpos)
    finally:
        env.render_rgb = True
    assert without.rgb is None and with_rgb.rgb is not None
    np.testing.assert_array_equal(with_rgb.seg, without.seg)
    np.testing.assert_array_equal(with_rgb.depth, without.depth)
