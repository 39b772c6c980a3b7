"""`--device auto` falls back to the CPU and then gives exactly the CPU fit; `cuda` without
a GPU is refused with the fix. (The CUDA path itself needs a GPU machine.)"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_fit import StandInAE, write_features

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies.devices import DeviceError, resolve_device
from kubm.stages.fit import fit

from conftest import run

TINY = {
    "act": {"chunk_size": 4, "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
            "n_vae_encoder_layers": 1, "dim_feedforward": 32, "latent_dim": 4, "iterations": 15, "batch_size": 8,
            "time_budget_s": None, "val_demos": 0},
    "diffusion": {"chunk_steps": 8, "n_action_steps": 4, "down_dims": [8, 16], "iterations": 15, "batch_size": 8,
                  "time_budget_s": None, "val_demos": 0, "num_train_timesteps": 20, "num_inference_steps": 4},
}


def test_auto_is_cpu_without_a_gpu_and_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="no CUDA device.*--device auto"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="not one of"):
        resolve_device("tpu")


@pytest.mark.parametrize("method", ["act", "diffusion"])
def test_auto_and_cpu_fits_are_identical(tmp_path, method):
    torch.set_num_threads(1)
    train = write_features(tmp_path / "train.zarr", n_eps=3, T=16)
    test = write_features(tmp_path / "test.zarr", n_eps=1, T=16, seed=1)
    config = load_config([DEFAULT_CONFIG])
    config["fit"][method].update(TINY[method])
    task = resolve_task(config, "adroit", "relocate")
    weights = {}
    for device in ("cpu", "auto"):
        out = tmp_path / device
        fit(task, config, method, 0, train, test, None, out, progress=False, ae=StandInAE(), device=device)
        weights[device] = load_file(out / "model.safetensors")
        assert json.loads((out / "diagnostics.json").read_text())["device"] == str(resolve_device(device))
    assert weights["cpu"].keys() == weights["auto"].keys()
    for k in weights["cpu"]:
        torch.testing.assert_close(weights["cpu"][k], weights["auto"][k], rtol=0, atol=0)


def test_cli_refuses_an_unavailable_device_before_reading_inputs(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run(["kubm", "fit", "adroit/relocate", "--method", "act", "--train", str(tmp_path / "none.zarr"),
                "--test", str(tmp_path / "none.zarr"), "--ae", str(tmp_path / "ae"), "--out", str(tmp_path / "m"),
                "--device", "cuda"], check=False)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr, proc.stderr
    assert not (tmp_path / "m").exists()
