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


# A recorded eval.json is compared exactly on the kind of CPU that recorded it. Another CPU
# runs other float kernels (MKL, oneDNN, MuJoCo, SAPIEN): on an AMD EPYC with AVX-512 the smoke
# records of an earlier session's machine came out with every success equal, but floats moved
# (relocate: up to 4e-4 relative) and on bucket a replan fired one step later, which moves
# what follows. There only the outcomes are compared: which episodes of which method succeed.
RECORDED_ON = "_recorded_on"


def cpu_fingerprint() -> str:
    """The CPU model and the vector unit torch uses: what decides the float kernels."""
    import platform

    import torch

    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model} / {torch.backends.cpu.get_cpu_capability()}"


def eval_outcomes(doc: dict) -> dict:
    """Per method, the (test seed, success) of every episode: what must hold on any CPU."""
    return {m: [(e["seed"], e["success"]) for e in entry["per_episode"]] for m, entry in doc["methods"].items()}


def check_recorded_eval(doc: dict, name: str) -> None:
    """Compare with tests/data/<name>.json: exactly (timing fields aside) on the CPU kind that
    recorded it, outcomes only on another. KUBM_RECORD_EVAL=1 rewrites it (after a change that
    is meant to move results; say so in the commit)."""
    import warnings

    path = ROOT / "tests" / "data" / f"{name}.json"
    got = json.loads(json.dumps(stable_eval(doc)))
    if os.environ.get("KUBM_RECORD_EVAL") == "1":
        path.write_text(json.dumps({**got, RECORDED_ON: cpu_fingerprint()}, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(path.read_text())
    machine = recorded.pop(RECORDED_ON, None)
    fix = "if the change is meant to move results, rerun with KUBM_RECORD_EVAL=1 and say so in the commit"
    if machine == cpu_fingerprint():
        assert got == recorded, f"{name}: eval.json differs from {path} (beyond timing fields); {fix}"
    else:
        warnings.warn(f"{name}: recorded on {machine!r}, checked on {cpu_fingerprint()!r}: outcomes only")
        assert eval_outcomes(got) == eval_outcomes(recorded), (
            f"{name}: which episodes succeed differs from {path}; {fix}")


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
