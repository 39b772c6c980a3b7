"""encode: the feature store K-UBM and the baselines train on.

Per split, ``data/{suite}/{task}/features/{split}.zarr``::

    data/flow     (N, d_flow) float32   flow AE latent of each frame's tracked points
    data/qpos     (N, d_q)    float32
    data/action   (N, d_q)    float32
    data/context  (N, d_c)    float32   the episode's context (first frame), repeated per step;
                                        d_c may be 0 (a zero-width array: no chunk files)
    meta/episode_ends, meta/seed

These stores are what `dvc pull` fetches, so fit/evaluate never need the raw demos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig, lineage_hash
from kubm.features.context import context_dim, context_spec, extract_context
from kubm.features.flow_ae import WEIGHTS, FlowAE, FlowAEError, sha256_file
from kubm.provenance import package_versions
from kubm.stages.lineage import check_lineage
from kubm.storage.episode_store import ArraySpec, EpisodeStore, EpisodeWriter, StoreError

PRODUCER = "encode"


def check_same_episodes(stores: dict[Path, EpisodeStore]) -> None:
    """Every store must hold the same episodes (seeds) with the same lengths, in order."""
    (ref_path, ref), *others = stores.items()
    ref_seeds = ref.meta("seed")
    for path, store in others:
        if store.n_episodes != ref.n_episodes or not np.array_equal(store.meta("seed"), ref_seeds):
            raise StoreError(f"{path} holds other episodes than {ref_path} (seeds {store.meta('seed')[:5].tolist()}... "
                             f"vs {ref_seeds[:5].tolist()}...); rerun its stage on these demos")
        if not np.array_equal(store.episode_ends, ref.episode_ends):
            raise StoreError(f"{path} has other episode lengths than {ref_path}; rerun its stage on these demos")


def check_ae(ae: FlowAE, ae_dir: Path, task: TaskConfig, config: dict, tracks: EpisodeStore) -> None:
    """The AE must be this task's, for these tracks' point count and image size."""
    how = f"retrain it: `kubm train-ae {task.id} ...`"
    if ae.task_id is not None and ae.task_id != task.id:
        raise FlowAEError(f"{ae_dir} is the flow AE of {ae.task_id}, not {task.id}; pass models/{task.id}/flow_ae")
    n_points = tracks.episode(0, keys=["visible"])["visible"].shape[1] if tracks.n_episodes \
        else tracks.attrs.get("n_points")
    if n_points != ae.n_points:
        raise FlowAEError(f"{ae_dir} encodes {ae.n_points} points but {tracks.path} has {n_points}; {how}")
    cam = tracks.attrs["camera"]
    if (int(cam["width"]), int(cam["height"])) != (ae.width, ae.height):
        raise FlowAEError(f"{ae_dir} was trained on {ae.width}x{ae.height} images but {tracks.path} is "
                          f"{cam['width']}x{cam['height']}; {how}")
    want = (config.get("train_ae") or {}).get("latent_dim")
    if want is not None and int(want) != ae.latent_dim:
        raise FlowAEError(f"{ae_dir} has a {ae.latent_dim}-d latent but train_ae.latent_dim is {want}; {how}")


def encode(task: TaskConfig, config: dict, demos: Path, tracks: Path, masks: Path, ae_dir: Path, out: Path,
           *, progress: bool = True) -> dict:
    """Write the feature store ``out`` for one split; returns a summary."""
    demos_path, tracks_path, masks_path, ae_dir, out = map(Path, (demos, tracks, masks, ae_dir, out))
    spec = context_spec(task.settings)
    d_c = context_dim(task.settings)
    # Images are read only when there is a context to extract (first frame of each episode).
    need_img = (["rgb"] + (["seg"] if spec["type"] == "seg_centroid" else [])) if d_c else []
    demos = EpisodeStore.open(demos_path, producer="collect", required=["qpos", "action", *need_img])
    tracks = EpisodeStore.open(tracks_path, producer="track", required=["points", "visible"])
    masks = EpisodeStore.open(masks_path, producer="segment", required=["mask"])
    check_same_episodes({demos_path: demos, tracks_path: tracks, masks_path: masks})
    for store, path in ((demos, demos_path), (tracks, tracks_path), (masks, masks_path)):
        s, t = store.attrs.get("suite"), store.attrs.get("task")
        if s is not None and t is not None and f"{s}/{t}" != task.id:
            raise StoreError(f"{path} belongs to {s}/{t}, not {task.id}")
    ae = FlowAE.load(ae_dir)
    check_ae(ae, ae_dir, task, config, tracks)
    for path, attrs, producer in ((demos_path, demos.attrs, "collect"), (masks_path, masks.attrs, "segment"),
                                  (tracks_path, tracks.attrs, "track"), (ae_dir, ae.meta, "train_ae")):
        check_lineage(path, attrs.get("lineage"), config, task, producer)
    cam = demos.attrs["camera"]
    width, height = int(cam["width"]), int(cam["height"])
    if (width, height) != (ae.width, ae.height):
        raise StoreError(f"{demos_path} is {width}x{height} but the tracks/AE are {ae.width}x{ae.height}")
    d_q = int(demos.attrs["d_q"])

    attrs = {
        "suite": task.suite, "task": task.task, "split": demos.attrs.get("split"), "config_hash": task.hash(),
        "lineage": lineage_hash(config, task, "encode"),
        "d_q": d_q, "d_flow": ae.latent_dim, "d_c": d_c, "width": width, "height": height,
        "fps": demos.attrs["fps"], "joint_names": demos.attrs.get("joint_names"),
        "context": {**spec, "source": "first frame RGB" if spec["type"] != "seg_centroid" else "first frame seg",
                    "layout": "centroid (x/W, y/H), pixel centres at integers" if d_c else "none"},
        "ae": {"dir": str(ae_dir), "sha256": sha256_file(ae_dir / WEIGHTS), "config": ae.config_dict()},
        "tracker": tracks.attrs.get("backend"), "segmenter": masks.attrs.get("backend"),
        "source": {"demos": str(demos_path), "tracks": str(tracks_path), "masks": str(masks_path),
                   "demos_config_hash": demos.attrs.get("config_hash")},
        "versions": package_versions(),
    }
    data = [ArraySpec("flow", (ae.latent_dim,), "float32"), ArraySpec("qpos", (d_q,), "float32"),
            ArraySpec("action", (d_q,), "float32"), ArraySpec("context", (d_c,), "float32")]
    seeds = demos.meta("seed")
    contexts = []
    with EpisodeWriter(out, producer=PRODUCER, data=data, meta={"seed": "int64"}, attrs=attrs,
                       overwrite=True) as writer:
        for i in tqdm(range(demos.n_episodes), desc=f"encode {task.id}", unit="ep", disable=not progress):
            ep = demos.episode(i, keys=["qpos", "action", *need_img])
            tr = tracks.episode(i, keys=["points", "visible"])
            T = len(ep["qpos"])
            if ep["action"].shape[1] != d_q:
                raise StoreError(f"{demos_path}: data/action has {ep['action'].shape[1]} dims, d_q is {d_q}; "
                                 "K-UBM needs joint-position targets")
            if d_c:
                seg0 = ep["seg"][0] if "seg" in ep else None
                c = extract_context(task.settings, ep["rgb"][0], seg0, width, height, task_id=task.id)
            else:
                c = np.zeros(0, np.float32)
            contexts.append(c)
            writer.append_episode({
                "flow": ae.encode(tr["points"], tr["visible"]),
                "qpos": ep["qpos"].astype(np.float32), "action": ep["action"].astype(np.float32),
                "context": np.repeat(c[None].astype(np.float32), T, axis=0),
            }, {"seed": int(seeds[i])})
        writer.finish()
    summary = {"out": str(out), "episodes": demos.n_episodes, "steps": demos.n_steps, "d_q": d_q,
               "d_flow": ae.latent_dim, "d_c": d_c}
    if d_c and contexts:
        cs = np.stack(contexts)
        summary["context_min"], summary["context_max"] = cs.min(0).tolist(), cs.max(0).tolist()
    return summary
