"""Flow autoencoder, train_ae stage and context extraction (fast, synthetic data)."""

import json

import cv2
import numpy as np
import pytest
import torch

from kubm.config import TaskConfig
from kubm.features.context import ContextError, context_dim, extract_context
from kubm.features.flow_ae import FlowAE, FlowAEConfig, FlowAEError, FlowAutoencoder
from kubm.stages.train_ae import TrainDiverged, fit_flow_ae, train_ae
from kubm.storage.episode_store import ArraySpec, EpisodeWriter

W, H, N = 64, 48, 16
SMALL = {"latent_dim": 4, "hidden": [32], "epochs": 3, "batch_size": 32, "lr": 3e-3, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def moving_cloud(seed: int, T: int = 20, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """A rigid point cloud translating and rotating across the image: (points px, visible)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-6, 6, size=(n, 2))
    base = base[np.lexsort((base[:, 0], base[:, 1]))]  # canonical (raster) order, as the tracker
    start, vel = rng.uniform([15, 15], [35, 25]), rng.uniform(-0.6, 0.6, size=2)
    ang = np.linspace(0, rng.uniform(-0.5, 0.5), T)
    rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], -1).reshape(T, 2, 2)
    pts = np.einsum("tij,nj->tni", rot, base) + (start + vel * np.arange(T)[:, None])[:, None]
    vis = rng.random((T, n)) > 0.1
    return pts.astype(np.float32), vis


def write_tracks(path, seeds, task=("adroit", "relocate"), T=20, n=N, w=W, h=H):
    attrs = {"suite": task[0], "task": task[1], "config_hash": "x", "n_points": n,
             "backend": {"backend": "sim", "model": None}, "camera": {"width": w, "height": h}}
    with EpisodeWriter(path, producer="track", data=[ArraySpec("points", (n, 2), "float32"),
                                                     ArraySpec("visible", (n,), "bool")],
                       meta={"seed": "int64"}, attrs=attrs) as wr:
        for s in seeds:
            pts, vis = moving_cloud(s, T, n)
            wr.append_episode({"points": pts, "visible": vis}, {"seed": s})
        wr.finish()
    return path


def task_cfg(context=None) -> TaskConfig:
    settings = {"horizon": 20, "camera": {"width": W, "height": H}}
    if context is not None:
        settings["context"] = context
    return TaskConfig(suite="adroit", task="relocate", simulator="mujoco", settings=settings)


def test_shapes_and_config_checks():
    cfg = FlowAEConfig.from_dict(SMALL, n_points=N)
    ae = FlowAE(FlowAutoencoder(cfg), W, H)
    pts, vis = moving_cloud(0)
    z = ae.encode(pts, vis)
    assert z.shape == (20, 4) and z.dtype == np.float32
    back = ae.decode(z)
    assert back.shape == (20, N, 2) and back.dtype == np.float32
    assert ae.encode(pts[0], vis[0]).shape == (4,) and ae.decode(z[0]).shape == (N, 2)
    assert (ae.width, ae.height, ae.latent_dim, ae.n_points) == (W, H, 4, N)
    with pytest.raises(FlowAEError, match="points"):
        ae.encode(pts[:, :5], vis[:, :5])
    with pytest.raises(FlowAEError, match="unknown flow AE config key"):
        FlowAEConfig.from_dict({"latent": 3})
    default = FlowAEConfig()
    assert (default.n_points, default.latent_dim, default.hidden) == (256, 128, [512, 512])


def test_save_load_round_trip_and_errors(tmp_path):
    cfg = FlowAEConfig.from_dict(SMALL, n_points=N)
    torch.manual_seed(1)
    ae = FlowAE(FlowAutoencoder(cfg), W, H, {"task": "adroit/relocate"})
    ae.save(tmp_path / "ae")
    loaded = FlowAE.load(tmp_path / "ae")
    pts, vis = moving_cloud(3)
    assert np.array_equal(ae.encode(pts, vis), loaded.encode(pts, vis))
    assert loaded.meta["task"] == "adroit/relocate" and (loaded.width, loaded.height) == (W, H)

    with pytest.raises(FlowAEError, match="missing"):
        FlowAE.load(tmp_path / "nothing")
    # config.json that does not match the weights
    cfg_file = tmp_path / "ae" / "config.json"
    saved = json.loads(cfg_file.read_text())
    saved["config"]["latent_dim"] = 5
    cfg_file.write_text(json.dumps(saved))
    with pytest.raises(FlowAEError, match="does not match"):
        FlowAE.load(tmp_path / "ae")


def test_training_reduces_loss_and_is_deterministic():
    data = [moving_cloud(s) for s in range(12)]
    uv = np.concatenate([p for p, _ in data]) / np.array([W, H], np.float32)
    vis = np.concatenate([v for _, v in data])
    cfg = FlowAEConfig.from_dict({**SMALL, "epochs": 40}, n_points=N)
    model, curves = fit_flow_ae(cfg, uv, vis, uv[:40], vis[:40])
    assert curves["train_loss"][-1] < 0.2 * curves["train_loss"][0]
    assert curves["test_loss"][-1] < curves["test_loss"][0]
    cfg2 = FlowAEConfig.from_dict({**SMALL, "epochs": 2}, n_points=N)
    a, _ = fit_flow_ae(cfg2, uv, vis)
    b, _ = fit_flow_ae(cfg2, uv, vis)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_train_ae_stage_writes_model_and_metrics(tmp_path):
    train = write_tracks(tmp_path / "train.zarr", [0, 1, 2, 3])
    test = write_tracks(tmp_path / "test.zarr", [100, 101])
    out = tmp_path / "flow_ae"
    metrics = train_ae(task_cfg(), {"train_ae": SMALL}, train, test, out, threads=1, progress=False)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "metrics.json", "curves.json",
                                                "loss.png"}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["epochs"] == 3 and on_disk["recon_px_test"]["frames"] == 40
    for split in ("recon_px_test", "recon_px_train"):
        m = metrics[split]
        assert 0 <= m["median"] <= m["p95"] and np.isfinite(m["mean"])
    curves = json.loads((out / "curves.json").read_text())
    assert len(curves["train_loss"]) == len(curves["test_loss"]) == 3
    ae = FlowAE.load(out)
    assert ae.meta["task"] == "adroit/relocate" and ae.meta["tracker"]["backend"] == "sim"
    assert ae.meta["tracks"]["train"] == str(train) and ae.n_points == N


def test_train_ae_nan_divergence_saves_nothing(tmp_path):
    train = write_tracks(tmp_path / "train.zarr", [0, 1])
    test = write_tracks(tmp_path / "test.zarr", [100])
    out = tmp_path / "flow_ae"
    bad = {**SMALL, "lr": 1e12, "epochs": 30}
    with pytest.raises(TrainDiverged, match=r"epoch \d+"):
        train_ae(task_cfg(), {"train_ae": bad}, train, test, out, threads=1, progress=False)
    assert not out.exists() and not (tmp_path / "flow_ae.partial").exists()


# ---------------------------------------------------------------------------- context

GREEN = {"type": "color_centroid", "hsv_low": [22, 25, 10], "hsv_high": [88, 255, 255]}


def test_color_centroid_finds_green_disc():
    img = np.full((H, W, 3), (200, 205, 210), np.uint8)  # light grey-blue table
    cv2.circle(img, (40, 30), 3, (20, 60, 150), -1)  # a blue ball (distractor)
    yy, xx = np.mgrid[:H, :W]
    cx, cy = 21.3, 17.8  # sub-pixel centre
    img[np.hypot(xx - cx, yy - cy) <= 7] = (30, 140, 40)  # green disc
    img[2, 60] = (30, 140, 40)  # a stray green pixel: not the largest component
    c = extract_context({"context": GREEN}, img, None, W, H)
    assert c.shape == (2,) and c.dtype == np.float32
    assert abs(c[0] * W - cx) < 0.5 and abs(c[1] * H - cy) < 0.5
    assert context_dim({"context": GREEN}) == 2


def test_context_none_and_not_found():
    img = np.full((H, W, 3), 128, np.uint8)
    assert extract_context({}, img, None, W, H).shape == (0,)
    assert extract_context({"context": {"type": "none"}}, img, None, W, H).shape == (0,)
    assert context_dim({}) == 0
    with pytest.raises(ContextError, match="goal marker not found.*hsv_low/hsv_high.*adroit/relocate"):
        extract_context({"context": GREEN}, img, None, W, H, task_id="adroit/relocate")


def test_seg_centroid():
    seg = np.zeros((H, W), np.uint8)
    seg[10:14, 20:30] = 7
    c = extract_context({"context": {"type": "seg_centroid", "seg_ids": [7]}}, np.zeros((H, W, 3), np.uint8), seg, W, H)
    assert np.allclose(c, [24.5 / W, 11.5 / H])
    with pytest.raises(ContextError, match="seg id"):
        extract_context({"context": {"type": "seg_centroid", "seg_ids": [9]}}, np.zeros((H, W, 3), np.uint8), seg, W, H)
