"""A catalogue of bad inputs: each must give an error that names the problem and the fix,
never a library traceback or a silently wrong result. The README's reliability section
lists these cases."""

from pathlib import Path

import numpy as np
import pytest
from test_fit import D_FLOW, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.features.flow_ae import FlowAE, FlowAEConfig, FlowAutoencoder
from kubm.policies import load_policy
from kubm.policies.persistence import ModelFileError, verify_model_dir
from kubm.policies.regression import RegressionConfig, RegressionPolicy
from kubm.stages.evaluate import CompatibilityError, evaluate
from kubm.stages.fit import FitError, fit


@pytest.fixture
def saved_model(tmp_path):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(4, 3))
    policy = RegressionPolicy.fit(RegressionConfig(ridge=0.1), x0, [rng.normal(size=(5, 2)) for _ in range(4)],
                                  d_q=2, d_flow=1, d_c=0, s=1.0, action_low=-np.ones(2), action_high=np.ones(2))
    return policy.save(tmp_path / "model")


def test_truncated_weights_name_the_file_and_the_fix(saved_model):
    w = saved_model / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    for read in (load_policy, verify_model_dir):
        with pytest.raises(ModelFileError, match=rf"{w}: cannot read the weights .*damaged or incomplete.*rerun its fit"):
            read(saved_model)


def test_corrupt_model_config_names_the_file(saved_model):
    (saved_model / "config.json").write_text('{"method": "regression", ')
    with pytest.raises(ModelFileError, match=r"config\.json: not valid JSON.*rerun its fit"):
        load_policy(saved_model)
    with pytest.raises(ModelFileError, match=r"config\.json: not valid JSON"):
        verify_model_dir(saved_model)


def test_healthy_model_verifies(saved_model):
    assert verify_model_dir(saved_model).startswith("regression model")


def other_ae(path):
    cfg = FlowAEConfig(n_points=8, latent_dim=D_FLOW, hidden=[16])
    return FlowAE(FlowAutoencoder(cfg), 128, 128).save(path)


def test_evaluate_refuses_an_autoencoder_the_features_were_not_encoded_with(tmp_path):
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=8)
    config = load_config([DEFAULT_CONFIG])
    task = resolve_task(config, "adroit", "relocate")
    with pytest.raises(CompatibilityError, match=r"is not the one .*test\.zarr was encoded with.*re-encode"):
        evaluate(task, config, [tmp_path / "m"], other_ae(tmp_path / "ae"), test, tmp_path / "eval.json",
                 progress=False)
    assert not (tmp_path / "eval.json").exists()


def test_fit_refuses_an_autoencoder_the_features_were_not_encoded_with(tmp_path):
    train = write_features(tmp_path / "train.zarr", n_eps=3, T=8)
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=8, seed=1)
    config = load_config([DEFAULT_CONFIG])
    task = resolve_task(config, "adroit", "relocate")
    with pytest.raises(FitError, match=r"is not the one .*train\.zarr was encoded with"):
        fit(task, config, "regression", 0, train, test, other_ae(tmp_path / "ae"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _chunk_files(store, name):
    return sorted(p for p in (store / "data" / name).rglob("*") if p.is_file() and p.name != "zarr.json")


def test_info_reports_missing_chunks_and_verify_decodes_every_chunk(tmp_path):
    from typer.testing import CliRunner

    from kubm.cli import app

    store = write_features(tmp_path / "f.zarr", n_eps=2, T=8)
    runner = CliRunner()
    ok = runner.invoke(app, ["info", str(store), "--verify"])
    assert ok.exit_code == 0 and "verified: every chunk decodes" in ok.output
    # a damaged chunk: the flag still says complete, --verify names the array
    chunk = _chunk_files(store, "flow")[0]
    chunk.write_bytes(b"\x00garbage" * 4)
    bad = runner.invoke(app, ["info", str(store), "--verify"])
    assert bad.exit_code == 2 and "data/flow has a damaged chunk" in bad.output and "rerun the stage" in bad.output
    # a missing chunk is reported even without --verify
    chunk.unlink()
    plain = runner.invoke(app, ["info", str(store)])
    assert "DAMAGED: flagged complete, but chunks are missing: data/flow (0 of 1 chunks)" in plain.output


def test_configfile_merges_over_the_default_config_like_snakemake(root, monkeypatch):
    from typer.testing import CliRunner

    from kubm.cli import app, config_files

    monkeypatch.chdir(root)
    # a profile holds only what it changes: alone it would lack required keys
    res = CliRunner().invoke(app, ["check-config", "-c", "config/smoke.yaml"])
    assert res.exit_code == 0, res.output
    assert config_files([Path("config/smoke.yaml")]) == [Path("config/config.yaml"), Path("config/smoke.yaml")]
    assert config_files([Path("config/config.yaml"), Path("config/smoke.yaml")]).count(Path("config/config.yaml")) == 1


def test_hand_run_stage_qc_goes_beside_its_output(tmp_path):
    from kubm.cli import _qc_paths

    metrics, video = _qc_paths(tmp_path / "elsewhere" / "train.zarr", "segment", "train", None, None)
    assert metrics == tmp_path / "elsewhere" / "segment_train.metrics.json" and video.parent == tmp_path / "elsewhere"


def test_truncated_cotracker_checkpoint_names_the_file_and_the_fetch(tmp_path):
    import torch

    from kubm.perception.tracking_cotracker import CoTrackerTracker
    from kubm.perception.weights import CheckpointDamaged

    ckpt = tmp_path / "scaled_offline.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-300])  # an interrupted download
    with pytest.raises(CheckpointDamaged, match=rf"{ckpt}: .*truncated.*fetch it again: wget .*scaled_offline\.pth"):
        CoTrackerTracker(mode="offline", checkpoint=ckpt, device="cpu")


def test_features_built_under_another_config_are_refused(tmp_path):
    """A feature store records the lineage hash of the config that built it; a fit under
    another config (e.g. the default after pulling a smoke cache) refuses it, saving nothing."""
    import zarr

    from kubm.config import lineage_hash
    from kubm.stages.lineage import StaleInput
    from test_fit import StandInAE, setup

    task, config = setup()
    train, test = write_features(tmp_path / "train.zarr"), write_features(tmp_path / "test.zarr", n_eps=2, seed=1)
    for path in (train, test):  # what encode writes under the active config: accepted
        zarr.open_group(str(path), mode="r+").attrs["lineage"] = lineage_hash(config, task, "encode")
    fit(task, config, "regression", 0, train, test, None, tmp_path / "ok", ae=StandInAE())
    zarr.open_group(str(train), mode="r+").attrs["lineage"] = "0123456789abcdef"  # another config's
    with pytest.raises(StaleInput, match=r"train\.zarr was built under another config .*0123456789abcdef.*"
                                         r"the active config gives [0-9a-f]{16}.*snakemake"):
        fit(task, config, "regression", 0, train, test, None, tmp_path / "stale", ae=StandInAE())
    assert not (tmp_path / "stale").exists()


@pytest.mark.parametrize("text, message", [
    ("fit:\n  kubm: [\n", "is not valid YAML"),
    (None, "config file not found"),
])
def test_unreadable_config_file_is_named(tmp_path, root, monkeypatch, text, message):
    from typer.testing import CliRunner

    from kubm.cli import app

    monkeypatch.chdir(root)
    path = tmp_path / "profile.yaml"
    if text is not None:
        path.write_text(text)
    res = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert res.exit_code == 2 and message in res.output and str(path) in res.output, res.output
    assert "Traceback" not in res.output


def test_a_target_after_configfile_is_named_not_read_as_config(root):
    """`--configfile` takes several values, so a results file after it is read as a config."""
    import subprocess
    import sys

    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run([snakemake, "-n", "--cores", "1", "--configfile", "config/smoke.yaml",
                           "results/adroit/relocate/eval.json"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert "was read as a config file" in out and "put targets before it" in out, out[-3000:]
