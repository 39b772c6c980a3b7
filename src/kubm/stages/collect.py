"""collect: roll a privileged-state expert out in the simulator and keep successes.

Each seed is first screened without rendering (physics is ~10x cheaper than a
render), and only successful seeds are replayed with rendering and stored. The
replay executes the screened actions (an expensive expert such as MPPI is not run
twice) and must reproduce the screened states exactly; if it does not, the
simulator is nondeterministic and we stop rather than store it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kubm.config import TaskConfig, lineage_hash
from kubm.experts.base import Expert
from kubm.provenance import git_revision, package_versions
from kubm.sim.base import ManipulationEnv
from kubm.errors import StageError
from kubm.storage.episode_store import ArraySpec, EpisodeWriter

log = logging.getLogger(__name__)

PRODUCER = "collect"


class CollectError(StageError, RuntimeError):
    """collect could not produce the requested demos; the message says why and what to change."""


@dataclass
class Episode:
    seed: int
    success: bool
    qpos: np.ndarray
    action: np.ndarray
    object_state: np.ndarray
    object_pose: np.ndarray
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None


def rollout(env: ManipulationEnv, expert: Expert | None, seed: int, horizon: int, render: bool,
            actions: np.ndarray | None = None) -> Episode:
    """One episode: observation t, then the expert's action t, for t < horizon.

    With ``actions`` the episode replays them instead of asking the expert.
    Success is the task's final-step criterion (docs/design.md, "Benchmarks").
    """
    obs = env.reset(seed)
    if actions is None:
        expert.reset(env, seed)
    replay = actions
    qpos, executed, objs, poses, rgbs, depths, segs = [], [], [], [], [], [], []
    for _ in range(horizon):
        qpos.append(obs.qpos)
        objs.append(env.object_state())
        poses.append(env.object_poses())
        if render:
            rgbs.append(obs.rgb)
            depths.append(obs.depth)
            segs.append(obs.seg)
        action = np.asarray(expert.act(env) if replay is None else replay[len(executed)], dtype=np.float32)
        executed.append(action)
        obs = env.step(action)
    ep = Episode(
        seed=seed,
        success=bool(env.success()),
        qpos=np.asarray(qpos, dtype=np.float32),
        action=np.asarray(executed, dtype=np.float32),
        object_state=np.asarray(objs, dtype=np.float32),
        object_pose=np.asarray(poses, dtype=np.float32),
    )
    if render:
        ep.rgb, ep.depth, ep.seg = np.stack(rgbs), np.stack(depths).astype(np.float32), np.stack(segs)
    return ep


def collect(task: TaskConfig, split: str, out: Path, *, overwrite: bool = True, progress: bool = True) -> dict:
    """Write `out` (an episode store) with task.n_demos(split) successful episodes.

    Returns a summary dict (kept, attempted, acceptance rate).
    """
    # Imported here so `kubm --help` stays fast and the CLI works without simulators.
    from kubm.experts.registry import make_expert
    from kubm.sim.registry import camera_spec, make_env

    settings = task.settings
    horizon = settings["horizon"]
    n_wanted = task.n_demos(split)
    seeds = task.seeds(split)
    expert_cfg = settings["expert"]

    cam = camera_spec(settings["camera"])
    screen_env = make_env(task.suite, task.task, {**settings, "camera_spec": cam}, render=False)
    render_env = make_env(task.suite, task.task, {**settings, "camera_spec": cam}, render=True)
    expert = make_expert(expert_cfg["name"], expert_cfg.get("params"))

    d_q = render_env.action_dim
    first = render_env.reset(seeds[0])
    d_o = int(np.asarray(render_env.object_state()).shape[0])
    n_bodies = len(render_env.object_seg_ids)
    h, w = first.rgb.shape[:2]
    attrs = {
        "suite": task.suite,
        "task": task.task,
        "split": split,
        "simulator": task.simulator,
        "config_hash": task.hash(),
        "lineage": lineage_hash({}, task, "collect"),  # collect reads no config section
        "config": settings,
        "expert": expert_cfg,
        "horizon": horizon,
        "fps": render_env.fps,
        "d_q": d_q,
        "joint_names": list(render_env.joint_names),
        "action_meaning": "joint-position targets for joint_names (rad for hinges, m for slides)",
        "camera": {
            "intrinsics": np.asarray(render_env.camera_intrinsics()).tolist(),
            "extrinsics_world_to_cam": np.asarray(render_env.camera_extrinsics()).tolist(),
            "width": w,
            "height": h,
            "convention": "OpenCV (x right, y down, z forward)",
        },
        "seg_object_ids": [int(i) for i in render_env.object_seg_ids],
        "object_pose_layout": "per seg_object_ids body: x, y, z, qw, qx, qy, qz (world)",
        "success_definition": "final step",
        "versions": package_versions(),
        "git_revision": git_revision(),
    }
    data_specs = [
        ArraySpec("action", (d_q,), "float32"),
        ArraySpec("qpos", (d_q,), "float32"),
        ArraySpec("object_state", (d_o,), "float32"),
        ArraySpec("object_pose", (n_bodies, 7), "float32"),
        ArraySpec("rgb", (h, w, 3), "uint8", big=True),
        ArraySpec("depth", (h, w), "float32", big=True),
        ArraySpec("seg", (h, w), "uint8", big=True),
    ]
    meta_specs = {"seed": "int64", "success": "bool"}

    kept, attempted = 0, 0
    with EpisodeWriter(out, producer=PRODUCER, data=data_specs, meta=meta_specs, attrs=attrs, overwrite=overwrite) as writer:
        bar = tqdm(total=n_wanted, desc=f"collect {task.id} {split}", unit="demo", disable=not progress)
        for seed in seeds:
            if kept == n_wanted:
                break
            attempted += 1
            screened = rollout(screen_env, expert, seed, horizon, render=False)
            if screened.success:
                ep = rollout(render_env, None, seed, horizon, render=True, actions=screened.action)
                if not (ep.success and np.array_equal(ep.qpos, screened.qpos)):
                    raise CollectError(
                        f"{task.id} seed {seed}: the rendered replay of the screened actions reached other states; "
                        "the simulator is nondeterministic (rendering must not change physics, and reset(seed) "
                        "must rebuild the same scene)"
                    )
                writer.append_episode(
                    {"action": ep.action, "qpos": ep.qpos, "object_state": ep.object_state, "object_pose": ep.object_pose,
                     "rgb": ep.rgb, "depth": ep.depth, "seg": ep.seg},
                    {"seed": seed, "success": True},
                )
                kept += 1
                bar.update(1)
            bar.set_postfix(attempted=attempted, acceptance=f"{kept / attempted:.0%}")
        bar.close()
        summary = {"kept": kept, "attempted": attempted, "acceptance_rate": kept / max(attempted, 1),
                   "seeds_tried": [seeds[0], seeds[0] + attempted - 1]}
        if kept < n_wanted:
            raise CollectError(
                f"{task.id} {split}: only {kept} of {n_wanted} episodes succeeded in the seed budget "
                f"(seeds {seeds.start}..{seeds.stop - 1}, acceptance {summary['acceptance_rate']:.0%}); raise "
                f"suites.{task.suite}.defaults.seeds.{split}.count (or the task's own) or lower n_demos.{split}"
            )
        writer.attrs.update(summary)
        writer.finish()
    screen_env.close()
    render_env.close()
    log.info("collect %s %s: kept %d of %d attempted (%.0f%%)", task.id, split, kept, attempted, 100 * summary["acceptance_rate"])
    return summary
