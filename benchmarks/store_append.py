"""Seconds per appended episode (200 steps, 128x128 RGB + depth + seg) for EpisodeWriter.

Prints JSON. The point: appending episode 61 costs about what appending episode 1 does
(each append rewrites at most the partial last shard, never earlier data).

    python benchmarks/store_append.py [--episodes 70] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter

T, H, W = 200, 128, 128
SPECS = [
    ArraySpec("action", (30,), "float32"),
    ArraySpec("qpos", (30,), "float32"),
    ArraySpec("object_state", (13,), "float32"),
    ArraySpec("rgb", (H, W, 3), "uint8", big=True),
    ArraySpec("depth", (H, W), "float32", big=True),
    ArraySpec("seg", (H, W), "uint8", big=True),
]


def episode(seed: int) -> dict[str, np.ndarray]:
    """Sim-like renders: static textured scene, a moving disc, exact depth (no sensor noise)."""
    rng = np.random.default_rng(seed)
    texture = np.random.default_rng(0).integers(0, 24, (1, H, W, 3))  # same scene every episode
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    t = np.arange(T, dtype=np.float32)[:, None, None]
    cy, cx = 64 + 30 * np.sin(t / 30 + seed), 64 + 30 * np.cos(t / 25 + seed)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 15**2
    depth = (1.0 + yy / H + 0.3 * ~disc - 0.3 * disc).astype(np.float32)
    base = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1)[None] + texture
    rgb = np.where(disc[..., None], [200, 40, 40], base)
    return {
        "action": rng.normal(size=(T, 30)).astype(np.float32),
        "qpos": np.cumsum(rng.normal(0, 0.01, (T, 30)), 0).astype(np.float32),
        "object_state": rng.normal(size=(T, 13)).astype(np.float32),
        "rgb": np.clip(rgb, 0, 255).astype(np.uint8),
        "depth": depth,
        "seg": disc.astype(np.uint8) * 3,
    }


def run(root: Path, n: int) -> dict:
    eps = [episode(s) for s in range(4)]  # generation is not what we time
    path = root / "bench.zarr"
    times = []
    with EpisodeWriter(path, producer="bench", data=SPECS, meta={"seed": "int64"}, attrs={}) as w:
        for i in range(n):
            t0 = time.perf_counter()
            w.append_episode(eps[i % 4], {"seed": i})
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        w.finish()
        t_finish = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = EpisodeStore.open(path)
    rgb = st.array("rgb")
    t_read = time.perf_counter() - t0
    assert rgb.shape == (n * T, H, W, 3)
    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    raw = sum(v.nbytes for v in eps[0].values()) * n
    t = np.array(times)
    return {
        "episodes": n,
        "eps_1_20_mean_s": round(float(t[:20].mean()), 4),
        "eps_last_20_mean_s": round(float(t[-20:].mean()), 4),
        "append_61st_s": round(float(t[60]), 4) if n > 60 else None,
        "amortized_s_per_episode": round(float((t.sum() + t_finish) / n), 4),
        "max_single_append_s": round(float(t.max()), 4),
        "finish_s": round(t_finish, 4),
        "open_and_read_rgb_s": round(t_read, 3),
        "files": sum(1 for f in path.rglob("*") if f.is_file()),
        "disk_mb": round(nbytes / 1e6, 1),
        "compression_ratio": round(raw / nbytes, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=70)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        out = {
            "episode": f"{T} steps, {H}x{W} rgb uint8 + depth float32 + seg uint8 + 3 small arrays",
            **run(Path(d), a.episodes),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
