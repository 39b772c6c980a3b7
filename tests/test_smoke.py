"""The smoke profile end to end, and the DVC round trip on its outputs.

Runs the real Snakemake DAG (collect on MuJoCo with rendering) in a copy of the
project, so nothing here touches the working tree's data/.
"""

import json
import subprocess

import numpy as np
import pytest

from kubm.storage.episode_store import EpisodeStore

from conftest import run

pytestmark = pytest.mark.smoke

SMOKE = ["--configfile", "config/smoke.yaml"]
DEMOS = ["data/adroit/relocate/demos/train.zarr", "data/adroit/relocate/demos/test.zarr"]
TRACKS = ["data/adroit/relocate/tracks/train.zarr", "data/adroit/relocate/tracks/test.zarr"]
# The stages built so far; extend as later stages land.
BUILT_TARGETS = TRACKS


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, request):
    from conftest import ROOT

    import shutil
    import os

    dest = tmp_path_factory.mktemp("smoke") / "proj"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / f)
        elif src.is_file():
            shutil.copy2(src, dest / f)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot")
    proc = run(["snakemake", *BUILT_TARGETS, "--cores", "2", *SMOKE], cwd=dest)  # targets first: --configfile takes lists
    return dest, proc


def test_smoke_builds_existing_stages(smoke_run):
    proj, _ = smoke_run
    train = EpisodeStore.open(proj / DEMOS[0], producer="collect")
    test = EpisodeStore.open(proj / DEMOS[1], producer="collect")
    assert train.n_episodes == 2 and test.n_episodes == 1
    assert set(train.meta("seed")).isdisjoint(set(test.meta("seed")))
    assert train.attrs["acceptance_rate"] > 0 and train.attrs["expert"]["name"] == "adroit_relocate"
    rgb = train.array("rgb")
    assert rgb.shape[1:] == (128, 128, 3) and rgb.dtype == np.uint8
    seg, ids = train.array("seg"), train.attrs["seg_object_ids"]
    assert np.isin(seg[0], ids).any(), "object visible in the first frame"
    assert (proj / "logs/benchmarks/adroit/relocate/collect_train.tsv").is_file()


def test_smoke_perception_stages(smoke_run):
    proj, _ = smoke_run
    masks = EpisodeStore.open(proj / "data/adroit/relocate/masks/train.zarr", producer="segment")
    tracks = EpisodeStore.open(proj / TRACKS[0], producer="track")
    assert masks.n_episodes == tracks.n_episodes == 2
    assert masks.attrs["backend"]["backend"] == "sim" and tracks.attrs["backend"]["backend"] == "sim"
    pts, vis = tracks.array("points"), tracks.array("visible")
    assert pts.shape == (400, 256, 2) and vis.shape == (400, 256) and vis[0].all()
    # Frame-0 points lie inside the frame-0 mask.
    m0 = masks.array("mask")[0]
    xy = np.rint(pts[0]).astype(int)
    assert m0[xy[:, 1], xy[:, 0]].mean() > 0.95
    qc = proj / "results/adroit/relocate/qc"
    for stage in ("segment", "track"):
        metrics = json.loads((qc / f"{stage}_train.metrics.json").read_text())
        assert metrics["backend"] == "sim"
        assert (qc / f"{stage}_train.mp4").stat().st_size > 1000


def test_smoke_full_dag_dry_run(smoke_run):
    proj, _ = smoke_run
    out = run(["snakemake", "-n", "--cores", "1", *SMOKE], cwd=proj).stdout
    assert "collect" not in out.split("Job stats")[1].split("Reasons")[0]  # demos are up to date
    assert "evaluate" in out


def test_collect_is_deterministic(smoke_run):
    proj, _ = smoke_run
    again = proj / "again.zarr"
    run(["kubm", "collect", "adroit/relocate", "--split", "test", "--out", str(again),
         "-c", "config/config.yaml", "-c", "config/smoke.yaml", "--no-progress"], cwd=proj)
    a = EpisodeStore.open(proj / DEMOS[1], producer="collect")
    b = EpisodeStore.open(again, producer="collect")
    for key in a.keys():
        np.testing.assert_array_equal(a.array(key), b.array(key), err_msg=key)
    np.testing.assert_array_equal(a.meta("seed"), b.meta("seed"))


def test_dvc_round_trip(smoke_run, tmp_path):
    """run -> dvc commit/push -> fresh clone -> dvc pull -> snakemake --touch -> nothing to do."""
    proj, _ = smoke_run
    remote = tmp_path / "remote"
    run(["dvc", "remote", "modify", "local", "url", str(remote)], cwd=proj)
    stages = [f"{st}-adroit-relocate-{sp}" for st in ("collect", "segment", "track") for sp in ("train", "test")]
    run(["dvc", "commit", "-f", *stages], cwd=proj)
    run(["dvc", "push", *stages], cwd=proj)
    git(proj, "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(proj), str(clone))
    assert not (clone / DEMOS[0]).exists()
    run(["dvc", "pull", *stages], cwd=clone)
    status = run(["dvc", "status", *stages], cwd=clone).stdout
    assert "up to date" in status, status
    run(["snakemake", *BUILT_TARGETS, "--touch", "--cores", "1", *SMOKE], cwd=clone)
    dry = run(["snakemake", *BUILT_TARGETS, "-n", "--cores", "1", *SMOKE], cwd=clone).stdout
    assert "Nothing to be done" in dry, dry
    store = EpisodeStore.open(clone / TRACKS[0], producer="track")
    assert store.n_episodes == 2
