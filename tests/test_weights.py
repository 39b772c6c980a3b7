"""Checkpoint resolver: order of the places looked at, and the error when none has it."""

from pathlib import Path

import pytest

from kubm.perception import weights
from kubm.perception.weights import CheckpointNotFound, find_checkpoint, resolve_checkpoint

ENV_VARS = (
    "KUBM_SAM2_CKPT", "KUBM_SAM3_CKPT", "KUBM_COTRACKER_CKPT", "KUBM_WEIGHTS_DIR",
    "HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME",
)


@pytest.fixture(autouse=True)
def clean_home(tmp_path, monkeypatch):
    """Empty HOME and no weight-related env vars, so the real caches never leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return home


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ckpt")
    return path


def hf_cache_file(home: Path, repo: str, filename: str) -> Path:
    # The layout huggingface_hub writes: refs/main names the snapshot.
    root = home / ".cache/huggingface/hub" / ("models--" + repo.replace("/", "--"))
    touch(root / "refs/main").write_text("abc123")
    return touch(root / "snapshots/abc123" / filename)


def test_each_place_in_order(clean_home, tmp_path, monkeypatch):
    name = "sam2.1_hiera_tiny"
    fn = "sam2.1_hiera_tiny.pt"
    torch_hub = touch(clean_home / ".cache/torch/hub/checkpoints" / fn)
    assert find_checkpoint(name) == torch_hub

    hf = hf_cache_file(clean_home, "facebook/sam2.1-hiera-tiny", fn)
    assert find_checkpoint(name) == hf  # HF cache beats torch hub

    wdir = touch(clean_home / ".cache/kubm/weights" / fn)
    assert find_checkpoint(name) == wdir  # weights dir beats HF cache

    env = touch(tmp_path / "env" / fn)
    monkeypatch.setenv("KUBM_SAM2_CKPT", str(env))
    assert find_checkpoint(name) == env  # env var beats weights dir

    cfg = touch(tmp_path / "cfg" / "mine.pt")
    assert resolve_checkpoint(name, config_path=str(cfg)) == cfg  # config beats env var


def test_weights_dir_env_and_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBM_WEIGHTS_DIR", str(tmp_path / "w"))
    ckpt = touch(tmp_path / "w" / "scaled_offline.pth")
    assert resolve_checkpoint("cotracker3") == ckpt
    assert find_checkpoint("cotracker3_online") is None


def test_env_var_may_name_a_directory(tmp_path, monkeypatch):
    ckpt = touch(tmp_path / "d" / "sam2.1_hiera_large.pt")
    monkeypatch.setenv("KUBM_SAM2_CKPT", str(tmp_path / "d"))
    assert resolve_checkpoint("sam2.1_hiera_large") == ckpt


def test_torch_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    ckpt = touch(tmp_path / "th/hub/checkpoints/scaled_online.pth")
    assert resolve_checkpoint("cotracker3_online") == ckpt


def test_missing_lists_every_place_and_fetch_command(clean_home):
    with pytest.raises(CheckpointNotFound) as err:
        resolve_checkpoint("sam2.1_hiera_tiny")
    msg = str(err.value)
    for place in ("$KUBM_SAM2_CKPT", "weights dir", "Hugging Face cache", "torch hub cache"):
        assert place in msg
    assert str(clean_home / ".cache/kubm/weights/sam2.1_hiera_tiny.pt") in msg
    assert str(clean_home / ".cache/torch/hub/checkpoints/sam2.1_hiera_tiny.pt") in msg
    assert "huggingface-cli download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_cotracker_fetch_is_wget(clean_home):
    with pytest.raises(CheckpointNotFound, match="wget https://huggingface.co/facebook/cotracker3/"):
        resolve_checkpoint("cotracker3_offline")


def test_sam3_message_mentions_gated():
    with pytest.raises(CheckpointNotFound) as err:
        resolve_checkpoint("sam3")
    msg = str(err.value)
    assert "gated" in msg
    assert "huggingface-cli login" in msg
    assert "$KUBM_SAM3_CKPT" in msg


def test_explicit_missing_path_does_not_fall_through(clean_home, tmp_path, monkeypatch):
    # A typo in the config must not silently pick up a different file further down.
    touch(clean_home / ".cache/kubm/weights/sam3.pt")
    with pytest.raises(CheckpointNotFound, match="config path"):
        resolve_checkpoint("sam3", config_path=str(tmp_path / "nope.pt"))
    monkeypatch.setenv("KUBM_SAM3_CKPT", str(tmp_path / "nope.pt"))
    assert find_checkpoint("sam3") is None


def test_unknown_model():
    with pytest.raises(KeyError, match="unknown model"):
        find_checkpoint("sam9")


def test_registry_is_complete():
    for name, spec in weights.MODELS.items():
        assert spec.filename and spec.env_var.startswith("KUBM_") and "/" in spec.hf_repo, name
        assert weights.fetch_command(name)
