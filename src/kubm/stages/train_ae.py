"""train_ae: the flow autoencoder, trained on the train split's tracks.

Output ``models/{suite}/{task}/flow_ae/``::

    model.safetensors, config.json     the AE (kubm.features.flow_ae.FlowAE.load)
    metrics.json                       reconstruction error in pixels (test and train split)
    curves.json, loss.png              train / test loss per epoch

The test split is only reported on, never used to select anything. Everything is written
to ``<out>.partial`` and renamed at the end, so a diverged run leaves no model behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kubm.config import TaskConfig, lineage_hash
from kubm.storage.atomic import atomic_dir
from kubm.features.flow_ae import FlowAE, FlowAEConfig, FlowAEError, FlowAutoencoder, sha256_file  # noqa: F401
from kubm.provenance import git_revision, package_versions
from kubm.stages.lineage import check_lineage
from kubm.storage.episode_store import EpisodeStore, StoreError

TRACKS_PRODUCER = "track"


class TrainDiverged(FlowAEError):
    """The loss became NaN/inf; nothing was saved."""

    exit_code = 1  # the inputs were fine; the optimisation failed (the CLI exits 1, not 2)


def load_tracks(path: Path) -> tuple[np.ndarray, np.ndarray, EpisodeStore]:
    """(points [M,N,2] float32 px, visible [M,N] bool, store), checked for shape and finite values."""
    store = EpisodeStore.open(path, producer=TRACKS_PRODUCER, required=["points", "visible"])
    pts = store.array("points").astype(np.float32, copy=False)
    vis = store.array("visible").astype(bool, copy=False)
    if pts.ndim != 3 or pts.shape[2] != 2 or vis.shape != pts.shape[:2]:
        raise StoreError(f"{path}: data/points {pts.shape} / data/visible {vis.shape} are not (N,P,2) / (N,P)")
    if not np.isfinite(pts).all():
        raise StoreError(f"{path}: data/points holds non-finite values; rerun `kubm track`")
    if "camera" not in store.attrs:
        raise StoreError(f"{path}: attrs lack 'camera' (width/height needed to normalise points); rerun `kubm track`")
    return pts, vis, store


def _camera_wh(store: EpisodeStore) -> tuple[int, int]:
    cam = store.attrs["camera"]
    return int(cam["width"]), int(cam["height"])


def pixel_errors(ae: FlowAE, pts: np.ndarray, vis: np.ndarray) -> dict:
    """Per-point Euclidean reconstruction error in pixels: mean, median, p95 (all points),
    the mean over visible points only, and the mean error of the point centroid (what
    replanning compares)."""
    rec = ae.decode(ae.encode(pts, vis))
    err = np.linalg.norm(rec - pts, axis=-1)
    return {"mean": float(err.mean()), "median": float(np.median(err)), "p95": float(np.percentile(err, 95)),
            "visible_mean": float(err[vis].mean()) if vis.any() else None,
            "centroid_mean": float(np.linalg.norm(rec.mean(1) - pts.mean(1), axis=-1).mean()),
            "frames": int(len(pts))}


def _eval_loss(model: FlowAutoencoder, uv: torch.Tensor, vis: torch.Tensor, batch: int) -> float:
    """Frame-weighted mean loss over a whole set (no grad)."""
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(uv), batch):
            total += float(model.loss(uv[s:s + batch], vis[s:s + batch])) * len(uv[s:s + batch])
    return total / max(1, len(uv))


def fit_flow_ae(cfg: FlowAEConfig, uv: np.ndarray, vis: np.ndarray, test_uv: np.ndarray | None = None,
                test_vis: np.ndarray | None = None, *, progress: bool = False, desc: str = "train_ae"
                ) -> tuple[FlowAutoencoder, dict]:
    """Train on normalised coordinates uv [M,N,2] and visibility [M,N]; returns (model, curves).

    Deterministic given cfg.seed (and the thread count): seeded init and a seeded
    generator for the batch order. Raises TrainingDiverged naming the epoch."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = FlowAutoencoder(cfg)
    x, v = torch.as_tensor(uv, dtype=torch.float32), torch.as_tensor(vis, dtype=torch.float32)
    model.set_stats(x)
    has_test = test_uv is not None and len(test_uv) > 0
    if has_test:
        tx, tv = torch.as_tensor(test_uv, dtype=torch.float32), torch.as_tensor(test_vis, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curves: dict = {"epoch": [], "train_loss": [], "test_loss": [], "time_s": []}
    t0 = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss = model.loss(x[idx], v[idx])
            value = loss.item()
            if not np.isfinite(value):
                bar.close()
                raise TrainDiverged(f"flow AE training diverged: loss is {value} at epoch {epoch} "
                                       f"(lr={cfg.lr}); nothing was saved; lower train_ae.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += value * len(idx)
        model.eval()
        train_loss = total / len(x)
        test_loss = _eval_loss(model, tx, tv, cfg.batch_size) if has_test else None
        if test_loss is not None and not np.isfinite(test_loss):
            bar.close()
            raise TrainDiverged(f"flow AE training diverged: test loss is {test_loss} at epoch {epoch}; "
                                   "nothing was saved; lower train_ae.lr")
        curves["epoch"].append(epoch)
        curves["train_loss"].append(train_loss)
        curves["test_loss"].append(test_loss)
        curves["time_s"].append(round(time.perf_counter() - t0, 3))
        bar.set_postfix(loss=f"{train_loss:.3g}", test=f"{test_loss:.3g}" if has_test else "-")
    bar.close()
    return model.eval(), curves


def _plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(curves["epoch"], curves["train_loss"], label="train")
    if any(t is not None for t in curves["test_loss"]):
        ax.semilogy(curves["epoch"], curves["test_loss"], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE, standardised coords)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_ae(task: TaskConfig, config: dict, train_tracks: Path, test_tracks: Path, out_dir: Path, *,
             threads: int = 1, progress: bool = True) -> dict:
    """Train the flow AE of ``task``; write out_dir; return the metrics (also metrics.json)."""
    torch.set_num_threads(max(1, int(threads)))
    out_dir, train_tracks, test_tracks = Path(out_dir), Path(train_tracks), Path(test_tracks)
    pts, vis, train_store = load_tracks(train_tracks)
    test_pts, test_vis, test_store = load_tracks(test_tracks)
    for path, store in ((train_tracks, train_store), (test_tracks, test_store)):
        check_lineage(path, store.attrs.get("lineage"), config, task, "track")
    width, height = _camera_wh(train_store)
    if _camera_wh(test_store) != (width, height) or test_pts.shape[1] != pts.shape[1]:
        raise StoreError(f"{train_tracks} ({width}x{height}, {pts.shape[1]} points) and {test_tracks} "
                         f"({_camera_wh(test_store)[0]}x{_camera_wh(test_store)[1]}, {test_pts.shape[1]} points) "
                         "differ in camera or point count; rerun `kubm track` on both splits")
    for store, path in ((train_store, train_tracks), (test_store, test_tracks)):
        s, t = store.attrs.get("suite"), store.attrs.get("task")
        if s is not None and t is not None and f"{s}/{t}" != task.id:
            raise StoreError(f"{path} holds tracks of {s}/{t}, not {task.id}")
    if len(pts) == 0:
        raise StoreError(f"{train_tracks}: no frames to train on")
    cfg = FlowAEConfig.from_dict(config.get("train_ae", {}), n_points=int(pts.shape[1]))
    wh = np.array([width, height], np.float32)
    print(f"train_ae {task.id}: {len(pts)} train / {len(test_pts)} test frames, {pts.shape[1]} points, "
          f"latent {cfg.latent_dim}, {cfg.epochs} epochs", flush=True)

    t0 = time.perf_counter()
    model, curves = fit_flow_ae(cfg, pts / wh, vis, test_pts / wh, test_vis, progress=progress,
                                desc=f"train_ae {task.id}")
    wall = time.perf_counter() - t0
    meta = {
        "task": task.id, "suite": task.suite, "config_hash": task.hash(),
        "lineage": lineage_hash(config, task, "train_ae"),
        "tracks": {"train": str(train_tracks), "test": str(test_tracks)},
        "tracker": train_store.attrs.get("backend"),
        "tracks_config_hash": train_store.attrs.get("config_hash"),
        "train_frames": int(len(pts)), "git_revision": git_revision(), "versions": package_versions(),
    }
    ae = FlowAE(model, width, height, meta)
    metrics = {
        "task": task.id, "epochs": cfg.epochs, "wall_time_s": round(wall, 2),
        "final_train_loss": curves["train_loss"][-1], "final_test_loss": curves["test_loss"][-1],
        "latent_dim": cfg.latent_dim, "n_points": cfg.n_points, "width": width, "height": height,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "recon_px_test": pixel_errors(ae, test_pts, test_vis) if len(test_pts) else None,
        "recon_px_train": pixel_errors(ae, pts, vis),
        "recon_px": "per-point Euclidean distance in pixels between tracked and reconstructed points "
                    "(all points; visible_mean: visible points only)",
    }
    with atomic_dir(out_dir) as tmp:
        ae.save(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "curves.json").write_text(json.dumps(curves))
        _plot(curves, tmp / "loss.png", f"flow AE {task.id} ({wall:.0f} s)")
    return metrics
