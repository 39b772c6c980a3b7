"""`kubm pull` exits 0 only when the locked outputs arrived as dvc.lock records them, and
names an unreachable, empty or incomplete remote with the fix (a real DVC repo, local remote)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run


def _git(cwd: Path, *args: str) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd)


@pytest.fixture
def pushed(tmp_path):
    """A project with two locked stages named like the pipeline's, pushed to a local
    remote, and a fresh clone of it."""
    proj, remote = tmp_path / "proj", tmp_path / "remote"
    proj.mkdir()
    remote.mkdir()
    _git(proj, "init", "-q")
    run(["dvc", "init", "-q"], cwd=proj)
    run(["dvc", "remote", "add", "-d", "local", str(remote)], cwd=proj)
    run(["dvc", "stage", "add", "-q", "-n", "collect-adroit-relocate-train", "-o", "demos.txt",
         "echo collect-adroit-relocate-train > demos.txt"], cwd=proj)
    # features are built from the demos, as in the pipeline: pulled alone, their dep is absent
    run(["dvc", "stage", "add", "-q", "-n", "encode-adroit-relocate-train", "-d", "demos.txt", "-o", "features.txt",
         "echo encode-adroit-relocate-train > features.txt"], cwd=proj)
    run(["dvc", "repro", "-q"], cwd=proj)
    run(["dvc", "push", "-q"], cwd=proj)
    _git(proj, "add", "-A")
    _git(proj, "commit", "-qm", "locked")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(proj), str(clone))
    return clone, remote


def test_pull_fetches_the_default_selection_and_exits_zero(pushed):
    clone, _ = pushed
    proc = run(["kubm", "pull"], cwd=clone)
    assert "pulled 1 stage(s)" in proc.stdout and "every output is as dvc.lock records it" in proc.stdout
    assert "not pulled (upstream data" in proc.stdout  # the demos the features came from
    assert (clone / "features.txt").read_text().strip() == "encode-adroit-relocate-train"
    assert not (clone / "demos.txt").exists()  # raw data only with --all
    run(["kubm", "pull", "--all", "adroit/relocate"], cwd=clone)
    assert (clone / "demos.txt").exists()


def test_a_missing_remote_folder_is_named(pushed):
    clone, remote = pushed
    shutil.rmtree(remote)
    proc = run(["kubm", "pull"], cwd=clone, check=False)
    assert proc.returncode == 2
    assert "does not exist on this machine" in proc.stderr and "dvc remote modify" in proc.stderr


def test_an_empty_remote_is_named_with_the_fix(pushed):
    clone, remote = pushed
    shutil.rmtree(remote)
    remote.mkdir()
    proc = run(["kubm", "pull"], cwd=clone, check=False)
    assert proc.returncode == 2
    assert "lacks 1 output(s)" in proc.stderr and "dvc push" in proc.stderr, proc.stderr
    assert not (clone / "features.txt").exists()


def test_an_unreachable_object_store_is_named(pushed):
    clone, _ = pushed
    run(["dvc", "remote", "add", "s3", "s3://no-bucket/cache"], cwd=clone)
    run(["dvc", "remote", "modify", "s3", "endpointurl", "http://127.0.0.1:9"], cwd=clone)  # nothing listens
    proc = run(["kubm", "pull", "-r", "s3"], cwd=clone, check=False,
               env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"})
    assert proc.returncode == 2
    assert "s3" in proc.stderr and ("unreachable" in proc.stderr or "lacks" in proc.stderr), proc.stderr


def test_no_lock_and_unknown_task_are_named(pushed, tmp_path):
    clone, _ = pushed
    proc = run(["kubm", "pull", "dexart/bucket"], cwd=clone, check=False)
    assert proc.returncode == 2 and "records no stage" in proc.stderr
    (clone / "dvc.lock").unlink()
    proc = run(["kubm", "pull"], cwd=clone, check=False)
    assert proc.returncode == 2 and "no dvc.lock" in proc.stderr and "make run" in proc.stderr
