"""The smoke profile end to end, and the DVC round trip on its outputs.

Runs the real Snakemake DAG (collect on MuJoCo with rendering) in a copy of the
project, so nothing here touches the working tree's data/.
"""

import json
import re
import subprocess

import numpy as np
import pytest

from kubm.storage.episode_store import EpisodeStore

from conftest import check_recorded_eval, check_smoke_eval, run

pytestmark = pytest.mark.smoke

SMOKE = ["--configfile", "config/smoke.yaml"]
DEMOS = ["data/adroit/relocate/demos/train.zarr", "data/adroit/relocate/demos/test.zarr"]
TRACKS = ["data/adroit/relocate/tracks/train.zarr", "data/adroit/relocate/tracks/test.zarr"]
FEATURES = ["data/adroit/relocate/features/train.zarr", "data/adroit/relocate/features/test.zarr"]
EVAL = "results/adroit/relocate/eval.json"
# Everything the smoke profile builds, up to and including fit (DVC tracks these below).
BUILT_TARGETS = [*FEATURES, "models/adroit/relocate/flow_ae", "models/adroit/relocate/kubm/seed0"]


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from conftest import copy_project

    dest = copy_project(tmp_path_factory.mktemp("smoke") / "proj")
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot")
    # rule all: the smoke targets' eval.json, the perturbed protocol and the report (minutes on
    # 2 idle cores; the limit leaves room for a loaded machine)
    proc = run(["snakemake", "--cores", "2", *SMOKE], cwd=dest, timeout=1800)
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


def test_smoke_reaches_eval_json(smoke_run):
    proj, _ = smoke_run
    check_smoke_eval(proj, EVAL, SMOKE)


def test_smoke_eval_json_is_the_recorded_one(smoke_run):
    """Same config and thread count, same eval.json (timing fields aside): speed work and
    refactors must not move the smoke result. tests/data/smoke_eval_adroit_relocate.json."""
    proj, _ = smoke_run
    check_recorded_eval(json.loads((proj / EVAL).read_text()), "smoke_eval_adroit_relocate")


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
    stages = [f"{st}-adroit-relocate-{sp}" for st in ("collect", "segment", "track", "encode") for sp in ("train", "test")]
    stages += ["train_ae-adroit-relocate", "fit-adroit-relocate-kubm-seed0"]
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


def test_pulled_features_rerun_only_fit_and_evaluate(smoke_run, tmp_path):
    """A fresh clone with only the features (and the AE) from DVC: snakemake plans fit and evaluate, nothing upstream."""
    proj, _ = smoke_run
    remote = tmp_path / "remote"
    run(["dvc", "remote", "modify", "local", "url", str(remote)], cwd=proj)
    stages = ["encode-adroit-relocate-train", "encode-adroit-relocate-test", "train_ae-adroit-relocate"]
    run(["dvc", "commit", "-f", *stages], cwd=proj)
    run(["dvc", "push", *stages], cwd=proj)
    git(proj, "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "features")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(proj), str(clone))
    pulled = run(["kubm", "pull"], cwd=clone)  # the default selection: features and flow AE
    assert "every output is as dvc.lock records it" in pulled.stdout, pulled.stdout
    assert not (clone / DEMOS[0]).exists() and (clone / FEATURES[0]).exists()
    dry = run(["snakemake", "-n", "--cores", "1", "--quiet", "rules", *SMOKE], cwd=clone).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry, flags=re.M))
    assert set(jobs) - {"total"} == {"fit", "evaluate_method", "merge_eval", "summary", "evaluate_perturbed",
                                     "report", "all"}, dry


def test_adding_a_method_reruns_only_its_nodes(smoke_run, tmp_path):
    """A dry run after adding diffusion to the task's methods plans diffusion's fit and
    evaluation, the merge and the summary, and the perturbed evaluation (every method at
    once) and the report; nothing of kubm/kodex/regression or upstream."""
    proj, _ = smoke_run
    extra = tmp_path / "add_diffusion.yaml"
    extra.write_text("suites: {adroit: {tasks: {relocate: {methods: [kubm, kodex, regression, diffusion]}}}}\n")
    dry = run(["snakemake", "-n", "--cores", "1", *SMOKE, str(extra)], cwd=proj).stdout  # one --configfile, two files
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry, flags=re.M))
    assert jobs == {"fit": "1", "evaluate_method": "1", "merge_eval": "1", "summary": "1", "evaluate_perturbed": "1",
                    "report": "1", "all": "1", "total": "7"}, dry
    assert "models/adroit/relocate/diffusion/seed0" in dry and "methods/diffusion.json" in dry


def test_smoke_merges_cheap_methods_and_summarises(smoke_run):
    proj, _ = smoke_run
    doc = json.loads((proj / EVAL).read_text())
    assert list(doc["methods"]) == ["kubm", "kodex", "regression"]
    for m in doc["methods"]:
        assert (proj / f"results/adroit/relocate/methods/{m}.json").is_file()
        assert doc["methods"][m]["latency_ms"]["policy"]["median"] > 0
    for rel in doc["artifacts"]["videos"] + doc["artifacts"]["plots"]:
        assert (proj / "results/adroit/relocate" / rel).is_file(), rel
    summary = json.loads((proj / "results/summary.json").read_text())
    rows = summary["tasks"]["adroit/relocate"]["methods"]
    assert set(rows) == {"kubm", "kodex", "regression"}
    assert rows["kodex"]["paired_difference_vs_kubm"]["n_test_seeds"] == 2
    assert (proj / "results/summary_plots/success.png").stat().st_size > 1000
    assert "adroit/relocate" in (proj / "results/summary.md").read_text()


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """A real S3-API server (moto's standalone server) on a free localhost port, with a bucket."""
    import socket
    import sys
    import time
    from pathlib import Path

    boto3 = pytest.importorskip("boto3")
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("moto[server] is not installed (pip install -e .[test])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="kubm-test")
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield url, env, client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dvc_s3_round_trip(smoke_run, tmp_path, s3_server):
    """push to a real S3 API (dvc-s3 against moto_server) -> fresh clone elsewhere -> dvc pull ->
    the smoke target's dry run has nothing to do."""
    url, env, client = s3_server
    proj, _ = smoke_run
    stages = [f"{st}-adroit-relocate-{sp}" for st in ("collect", "segment", "track", "encode") for sp in ("train", "test")]
    stages += ["train_ae-adroit-relocate", "fit-adroit-relocate-kubm-seed0"]
    run(["dvc", "remote", "add", "-f", "s3", "s3://kubm-test/cache"], cwd=proj)
    run(["dvc", "remote", "modify", "s3", "endpointurl", url], cwd=proj)
    run(["dvc", "commit", "-f", *stages], cwd=proj)
    run(["dvc", "push", "-r", "s3", *stages], cwd=proj, env=env)
    keys = client.list_objects_v2(Bucket="kubm-test").get("KeyCount", 0)
    assert keys > 0, "nothing reached the S3 bucket"
    git(proj, "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s3 remote")

    clone = tmp_path / "elsewhere" / "clone"
    clone.parent.mkdir()
    git(clone.parent, "clone", "-q", str(proj), str(clone))
    assert not (clone / FEATURES[0]).exists()
    run(["kubm", "pull", "--all", "-r", "s3"], cwd=clone, env=env)  # fails unless every locked output arrived
    run(["snakemake", *BUILT_TARGETS, "--touch", "--cores", "1", *SMOKE], cwd=clone)
    dry = run(["snakemake", *BUILT_TARGETS, "-n", "--cores", "1", *SMOKE], cwd=clone).stdout
    assert "Nothing to be done" in dry, dry


def test_a_pulled_smoke_cache_is_not_reused_under_the_default_config(smoke_run, tmp_path):
    """Smoke-profile features and AE pulled into a fresh clone, then the default config's
    target: the first stage that reads them (fit) refuses them, naming both lineages and the
    fix, and writes nothing; the same fit under the smoke profile runs."""
    proj, _ = smoke_run
    remote = tmp_path / "remote"
    run(["dvc", "remote", "modify", "local", "url", str(remote)], cwd=proj)
    stages = ["encode-adroit-relocate-train", "encode-adroit-relocate-test", "train_ae-adroit-relocate"]
    run(["dvc", "commit", "-f", *stages], cwd=proj)
    run(["dvc", "push", "-r", "local", *stages], cwd=proj)
    git(proj, "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke features")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(proj), str(clone))
    run(["dvc", "pull", "-r", "local", *stages], cwd=clone)
    assert (clone / FEATURES[0]).exists() and not (clone / DEMOS[0]).exists()
    model = "models/adroit/relocate/regression/seed0"

    stale = run(["snakemake", "--cores", "1", model], cwd=clone, check=False)  # the default config
    log = (clone / "logs/adroit/relocate/fit_regression_seed0.log").read_text()
    assert stale.returncode != 0, stale.stdout
    assert "built under another config" in log and "lineage" in log and "snakemake" in log, log
    assert not (clone / model).exists()

    ok = run(["snakemake", "--cores", "1", *SMOKE, "--", model], cwd=clone, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (clone / model / "config.json").is_file()


def test_smoke_perturbed_protocol_and_report(smoke_run):
    """rule all also runs the perturbed protocol on relocate (the target moves after the
    grasp) and writes the report from the eval.json files."""
    from kubm.evaluation.report import validate_eval

    proj, _ = smoke_run
    doc = json.loads((proj / "results/adroit/relocate/perturbed/eval.json").read_text())
    validate_eval(doc)
    assert doc["protocol"]["perturbation"]["move"] == "target"
    assert doc["protocol"]["test_seeds"] == json.loads((proj / EVAL).read_text())["protocol"]["test_seeds"]
    kubm = doc["methods"]["kubm"]
    assert {"perturbed_at", "context_replans"} <= set(kubm["per_episode"][0])
    assert len(kubm["open_loop"]["per_episode_success"]) == len(kubm["per_episode"])
    report = (proj / "results/report.md").read_text()
    assert "| 3. replanning recovers from perturbations |" in report and "adroit/relocate" in report
    verdicts = json.loads((proj / "results/report.json").read_text())["verdicts"]
    assert set(verdicts) == {"1 success", "2 latency", "3 perturbation", "4 flow error"}
