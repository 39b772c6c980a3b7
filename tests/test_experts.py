"""Scripted Adroit experts: they succeed on known seeds, are deterministic, and are registered."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from kubm.experts.registry import make_expert
from kubm.sim.adroit import AdroitEnv

# Seeds from the tuning range (0-50) on which the experts succeed.
SUCCESS_SEEDS = {"relocate": [0, 1, 2], "door": [1, 4, 5]}


def rollout(task: str, seed: int, env: AdroitEnv | None = None):
    env = env or AdroitEnv(task, render=False)
    expert = make_expert(f"adroit_{task}", None)
    env.reset(seed)
    expert.reset(env, seed)
    actions, phases = [], []
    for _ in range(env.horizon):
        a = expert.act(env)
        assert a.shape == (env.action_dim,) and np.isfinite(a).all()
        actions.append(a)
        phases.append(expert.phase)
        env.step(a)
    return env.success(), np.array(actions), phases


@pytest.mark.parametrize("task", ["relocate", "door"])
def test_expert_succeeds_on_known_seeds(task):
    env = AdroitEnv(task, render=False)
    for seed in SUCCESS_SEEDS[task]:
        ok, _, phases = rollout(task, seed, env)
        assert ok, f"{task} seed {seed} failed; phases {sorted(set(phases))}"


@pytest.mark.parametrize("task", ["relocate", "door"])
def test_expert_is_deterministic(task):
    _, a1, p1 = rollout(task, 11)
    _, a2, p2 = rollout(task, 11)
    np.testing.assert_array_equal(a1, a2)
    assert p1 == p2


def test_phases_follow_the_task_order():
    _, _, phases = rollout("relocate", 0)
    seen = list(dict.fromkeys(phases))
    assert seen == ["reach", "descend", "close", "lift", "carry"]


def test_registry_errors():
    with pytest.raises(ValueError, match="adroit_door.*adroit_relocate"):
        make_expert("no_such_expert", None)
    with pytest.raises(ValueError, match="known"):
        make_expert("adroit_relocate", {"no_such_param": 1})
    assert make_expert("adroit_relocate", {"hover": 0.05}).p["hover"] == 0.05


def test_benchmark_cli(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import expert_success

    expert_success.main(["--task", "adroit/relocate", "--seeds", "0,1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "adroit/relocate" and result["expert"] == "adroit_relocate"
    assert result["n"] == 2 and result["successes"] == 2 and result["success_rate"] == 1.0
    assert {"seconds_per_episode", "seeds", "horizon", "params"} <= set(result)
