"""What several benchmark scripts share: writing their JSON, and rolling a model out on validation seeds.

Imported by the scripts beside it (run as `python benchmarks/<name>.py`, whose directory is
on sys.path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Seeds for choosing settings: neither training (0...) nor test (100000...) seeds.
VALIDATION_START = 50000


def validation_seeds(episodes: int) -> list[int]:
    return list(range(VALIDATION_START, VALIDATION_START + episodes))


def fit_command(task_id: str, method: str, root: Path, out: Path, *, seed: int = 0, threads: int = 1,
                configfiles: list[Path] = ()) -> list[str]:
    """`kubm fit` on the task's own inputs under `root` (data/{task}/features/{train,test}.zarr,
    models/{task}/flow_ae), as the fit rule runs it."""
    return ["kubm", "fit", task_id, "--method", method, "--seed", str(seed),
            "--train", str(root / f"data/{task_id}/features/train.zarr"),
            "--test", str(root / f"data/{task_id}/features/test.zarr"),
            "--ae", str(root / f"models/{task_id}/flow_ae"), "--out", str(out),
            "--threads", str(threads), "--no-progress", *sum((["--configfile", str(c)] for c in configfiles), [])]


def emit_json(doc: dict, out: Path | None) -> str:
    """Print `doc` as JSON and, with `out`, write it there too."""
    text = json.dumps(doc, indent=1)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return text


@dataclass
class ValidationRollouts:
    """One model of a task, ready to roll out on validation seeds with online perception."""

    config: dict
    task: Any
    policy: Any
    ae: Any
    env: Any
    perception: Any
    context_fn: Any

    @classmethod
    def load(cls, task_id: str, model: Path, root: Path, configfiles: list[Path]) -> ValidationRollouts:
        """The task's own inputs under `root`: data/{task}/features/test.zarr (dimensions and the
        AE check) and models/{task}/flow_ae."""
        import torch

        from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
        from kubm.evaluation.episodes import build_perception
        from kubm.evaluation.models import context_function, feature_info, load_checked_ae, load_models
        from kubm.sim.registry import make_env

        torch.set_num_threads(1)
        suite, name = task_id.split("/")
        config = load_config([DEFAULT_CONFIG, *configfiles])
        task = resolve_task(config, suite, name)
        test = root / f"data/{suite}/{name}/features/test.zarr"
        feat = feature_info(test)
        ae, n_points = load_checked_ae(root / f"models/{suite}/{name}/flow_ae", feat, test, 256)
        policy = load_models([model], task, feat)[0].policy
        env = make_env(suite, name, task.settings, render=True)
        return cls(config, task, policy, ae, env, build_perception(task, config, env, n_points),
                   context_function(task.settings, feat))

    def run(self, seed: int, *, replan: bool):
        from kubm.evaluation.rollout import run_episode

        return run_episode(self.env, self.policy, self.ae, self.perception, seed, context_fn=self.context_fn,
                           horizon=int(self.task.settings["horizon"]), replan=replan,
                           min_replan_interval=self.config["evaluate"]["min_replan_interval"])
