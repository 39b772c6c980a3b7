"""encode stage on small synthetic demo / mask / track stores."""

import numpy as np
import pytest
import torch

from kubm.features.flow_ae import FlowAE, FlowAEConfig, FlowAEError, FlowAutoencoder
from kubm.policies.features import load_features
from kubm.stages.encode import encode
from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter, StoreError
from test_flow_ae import GREEN, H, N, SMALL, W, task_cfg, write_tracks

T, DQ = 20, 3
CONFIG = {"train_ae": SMALL}


def green_frame(cx: float, cy: float) -> np.ndarray:
    img = np.full((H, W, 3), (200, 205, 210), np.uint8)
    yy, xx = np.mgrid[:H, :W]
    img[np.hypot(xx - cx, yy - cy) <= 5] = (30, 140, 40)
    return img


def write_demos(path, seeds):
    attrs = {"suite": "adroit", "task": "relocate", "split": "train", "config_hash": "c", "d_q": DQ,
             "fps": 100.0, "camera": {"width": W, "height": H}, "joint_names": ["a", "b", "c"]}
    with EpisodeWriter(path, producer="collect", data=[ArraySpec("qpos", (DQ,), "float32"),
                                                       ArraySpec("action", (DQ,), "float32"),
                                                       ArraySpec("rgb", (H, W, 3), "uint8", big=True),
                                                       ArraySpec("seg", (H, W), "uint8", big=True)],
                       meta={"seed": "int64", "success": "bool"}, attrs=attrs) as wr:
        for s in seeds:
            rgb = np.repeat(green_frame(10 + s, 12 + s)[None], T, axis=0)
            q = np.full((T, DQ), s, np.float32)
            wr.append_episode({"qpos": q, "action": q + 1, "rgb": rgb, "seg": np.zeros((T, H, W), np.uint8)},
                              {"seed": s, "success": True})
        wr.finish()
    return path


def write_masks(path, seeds):
    attrs = {"suite": "adroit", "task": "relocate", "backend": {"backend": "sim"}}
    with EpisodeWriter(path, producer="segment", data=[ArraySpec("mask", (H, W), "bool", big=True)],
                       meta={"seed": "int64"}, attrs=attrs) as wr:
        for s in seeds:
            wr.append_episode({"mask": np.zeros((T, H, W), bool)}, {"seed": s})
        wr.finish()
    return path


def save_ae(path, task="adroit/relocate", n=N):
    torch.manual_seed(0)
    ae = FlowAE(FlowAutoencoder(FlowAEConfig.from_dict(SMALL, n_points=n)), W, H, {"task": task})
    ae.save(path)
    return path


@pytest.fixture
def stores(tmp_path):
    seeds = [0, 1, 2]
    return {"demos": write_demos(tmp_path / "demos.zarr", seeds), "tracks": write_tracks(tmp_path / "tracks.zarr", seeds),
            "masks": write_masks(tmp_path / "masks.zarr", seeds), "ae": save_ae(tmp_path / "flow_ae")}


def run(stores, out, task=None, **over):
    s = {**stores, **over}
    return encode(task or task_cfg(GREEN), CONFIG, s["demos"], s["tracks"], s["masks"], s["ae"], out, progress=False)


def test_encode_writes_features(stores, tmp_path):
    out = tmp_path / "features.zarr"
    summary = run(stores, out)
    assert summary["episodes"] == 3 and summary["steps"] == 3 * T and summary["d_c"] == 2
    st = EpisodeStore.open(out, producer="encode", required=["flow", "qpos", "action", "context"])
    assert st.array("flow").shape == (3 * T, 4) and st.array("flow").dtype == np.float32
    assert st.array("qpos").shape == st.array("action").shape == (3 * T, DQ)
    assert list(st.meta("seed")) == [0, 1, 2]
    ctx = st.array("context")
    assert ctx.shape == (3 * T, 2)
    ep1 = st.episode(1)["context"]
    assert np.allclose(ep1, ep1[0]) and np.allclose(ep1[0] * [W, H], [11, 13], atol=0.5)
    # latents are the AE's encoding of the tracked points
    tr = EpisodeStore.open(stores["tracks"]).episode(2)
    assert np.allclose(st.episode(2)["flow"], FlowAE.load(stores["ae"]).encode(tr["points"], tr["visible"]))
    a = st.attrs
    assert (a["d_q"], a["d_flow"], a["d_c"], a["width"], a["height"], a["fps"]) == (DQ, 4, 2, W, H, 100.0)
    assert len(a["ae"]["sha256"]) == 64 and a["ae"]["config"]["config"]["latent_dim"] == 4
    assert a["tracker"]["backend"] == "sim" and a["segmenter"]["backend"] == "sim"
    assert a["task"] == "relocate" and a["context"]["type"] == "color_centroid" and a["config_hash"]
    assert load_features(out).d_c == 2  # what fit reads


def test_encode_without_context(stores, tmp_path):
    out = tmp_path / "features.zarr"
    assert run(stores, out, task=task_cfg())["d_c"] == 0
    st = EpisodeStore.open(out, producer="encode")
    assert st.array("context").shape == (3 * T, 0)
    assert load_features(out).d_c == 0


def test_mismatched_episodes(stores, tmp_path):
    other = write_tracks(tmp_path / "other_tracks.zarr", [0, 1, 5])
    with pytest.raises(StoreError, match="other episodes"):
        run(stores, tmp_path / "f.zarr", tracks=other)
    fewer = write_masks(tmp_path / "fewer_masks.zarr", [0, 1])
    with pytest.raises(StoreError, match="other episodes"):
        run(stores, tmp_path / "f.zarr", masks=fewer)
    assert not (tmp_path / "f.zarr").exists()


def test_wrong_ae(stores, tmp_path):
    with pytest.raises(FlowAEError, match="adroit/door"):
        run(stores, tmp_path / "f.zarr", ae=save_ae(tmp_path / "door_ae", task="adroit/door"))
    with pytest.raises(FlowAEError, match="points"):
        run(stores, tmp_path / "f.zarr", ae=save_ae(tmp_path / "ae8", n=8))
    with pytest.raises(FlowAEError, match="latent"):
        encode(task_cfg(GREEN), {"train_ae": {**SMALL, "latent_dim": 7}}, stores["demos"], stores["tracks"],
               stores["masks"], stores["ae"], tmp_path / "f.zarr", progress=False)
    assert not (tmp_path / "f.zarr").exists()
