"""Build a task env from its config entry (suite, task, simulator settings)."""

from __future__ import annotations

from dataclasses import fields

from kubm.errors import ConfigError
from kubm.sim.base import CameraSpec, ManipulationEnv

SUITES = ("adroit", "dexart")
ADROIT_TASKS = ("door", "hammer", "pen", "relocate")


def camera_spec(cfg: dict | CameraSpec | None) -> CameraSpec:
    """A task's `camera:` settings (or a CameraSpec) as a CameraSpec."""
    if isinstance(cfg, CameraSpec):
        return cfg
    cfg = dict(cfg or {})
    unknown = set(cfg) - {f.name for f in fields(CameraSpec)}
    if unknown:
        raise ConfigError(f"unknown camera keys {sorted(unknown)}; allowed: {[f.name for f in fields(CameraSpec)]}")
    for key in ("position", "lookat"):  # YAML gives lists; CameraSpec is frozen/hashable
        if cfg.get(key) is not None:
            cfg[key] = tuple(float(v) for v in cfg[key])
    return CameraSpec(**cfg)


def make_env(suite: str, task: str, task_cfg: dict | None = None, render: bool = True) -> ManipulationEnv:
    """task_cfg keys used: camera_spec (a CameraSpec) or camera (its fields as a dict),
    horizon, frame_skip, and for DexArt assets_dir, instances, visual_max_triangles; other keys are ignored."""
    task_cfg = task_cfg or {}
    if suite == "adroit":
        if task not in ADROIT_TASKS:
            raise ConfigError(f"unknown adroit task {task!r}; allowed: {', '.join(ADROIT_TASKS)}")
        if task_cfg.get("visual_max_triangles") is not None:
            raise ConfigError("visual_max_triangles decimates DexArt's robot meshes (SAPIEN); adroit tasks "
                              "do not take it: remove it from the adroit settings")
        from kubm.sim.adroit import AdroitEnv  # imports MuJoCo (and picks its GL backend)

        kwargs = {k: task_cfg[k] for k in ("horizon", "frame_skip") if task_cfg.get(k) is not None}
        camera = camera_spec(task_cfg.get("camera_spec") or task_cfg.get("camera"))
        return AdroitEnv(task, camera=camera, render=render, **kwargs)
    if suite == "dexart":
        from kubm.sim.dexart.tasks import TASKS as DEXART_TASKS

        if task not in DEXART_TASKS:
            raise ConfigError(f"unknown dexart task {task!r}; allowed: {', '.join(DEXART_TASKS)}")
        from kubm.sim.dexart.env import DexArtEnv  # imports SAPIEN

        kwargs = {k: task_cfg[k] for k in ("horizon", "frame_skip", "assets_dir", "instances", "visual_max_triangles") if task_cfg.get(k) is not None}
        camera = camera_spec(task_cfg.get("camera_spec") or task_cfg.get("camera"))
        return DexArtEnv(task, camera=camera, render=render, **kwargs)
    raise ConfigError(f"unknown suite {suite!r}; allowed: {', '.join(SUITES)}")
