"""The perturbed protocol: perturbations as config data, the context observed every step and
able to trigger a replan, the real Adroit parts that move, and the perturbed evaluate stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kubm.errors import ConfigError
from kubm.evaluation.perturbation import PerturbationSpec, perturbation_spec
from kubm.evaluation.rollout import run_episode
from kubm.features.context import ContextError
from test_evaluation import (AdroitAE, FakeAE, FakeEnv, FakeObs, FakePerception, HoldPolicy, _model_dir,
                             _write_features)

ROOT = Path(__file__).resolve().parents[1]


class MarkerEnv(FakeEnv):
    """FakeEnv whose image carries a goal marker's x in pixel (0, 0); `move_part` shifts it."""

    movable = ["target"]
    object_state_layout = [("q", 2)]

    def reset(self, seed):
        self.marker = 8
        return super().reset(seed)

    def _obs(self):
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[0, 0, 0] = self.marker
        return FakeObs(self.q.copy(), rgb)

    def object_state(self):
        return self.q.copy()

    def part_position(self, name):
        return np.array([self.marker, 0.0, 0.0])

    def move_part(self, name, offset):
        assert name == "target"
        self.marker += int(offset[0])


def marker_context(rgb, seg):
    return np.array([rgb[0, 0, 0] / 32.0, 0.5], np.float32)


class ContextPolicy(HoldPolicy):
    """HoldPolicy that records the context of every plan and replan."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.contexts = []

    def plan(self, qpos0, flow0, context, T):
        self.contexts.append(np.asarray(context).copy())
        return super().plan(qpos0, flow0, context, T)

    def replan(self, last_action, flow_obs, context, T):
        self.contexts.append(np.asarray(context).copy())
        return super().replan(last_action, flow_obs, context, T)


def _episode(policy, *, every_step=True, px=3.0, step=10, shift=6, context_fn=marker_context, replan=True):
    spec = PerturbationSpec(move="target", low=(shift, 0, 0), high=(shift, 0, 0), step=step)
    return run_episode(MarkerEnv(), policy, FakeAE(), FakePerception(shift=0.0), seed=3, context_fn=context_fn,
                       perturbation=spec.for_episode(3), context_every_step=every_step, context_replan_px=px,
                       replan=replan)


# ----------------------------------------------------------------------------- the loop
def test_a_moved_target_triggers_one_replan_with_the_new_context():
    policy = ContextPolicy()
    res = _episode(policy)
    # the move follows step 9 (the 10th); observation 10 shows it; the replan follows step 10
    assert res.perturbed_at == 9 and res.replans == 1 and res.context_replans == 1
    assert np.flatnonzero(res.replanned).tolist() == [10]
    assert policy.contexts[0][0] == pytest.approx(8 / 32) and policy.contexts[1][0] == pytest.approx(14 / 32)


def test_no_replan_when_the_context_is_read_once_or_the_move_is_small():
    assert _episode(ContextPolicy(), every_step=False).replans == 0  # the nominal protocol: first frame only
    assert _episode(ContextPolicy(), shift=2).replans == 0  # 2 px < 3 px
    assert _episode(ContextPolicy(), replan=False).replans == 0  # open loop: the plan runs to the end
    assert _episode(ContextPolicy(), replan=False).perturbed_at == 9  # ... and the move still happens


def test_receding_horizon_policies_see_the_latest_context():
    seen = []

    class Act:
        def act(self, f):
            seen.append(float(f["context"][0]))
            return f["qpos"]

    res = _episode(Act())
    assert res.perturbed_at == 9
    assert seen[:11] == [pytest.approx(8 / 32)] * 11 and seen[11] == pytest.approx(14 / 32)


def test_a_hidden_marker_keeps_the_last_context():
    calls = {"n": 0}

    def flaky(rgb, seg):
        calls["n"] += 1
        if 3 <= calls["n"] <= 6:
            raise ContextError("goal marker not found")
        return marker_context(rgb, seg)

    res = _episode(ContextPolicy(), context_fn=flaky, step=100)
    assert res.replans == 0 and res.perturbed_at is None


def test_state_condition_fires_once_when_it_first_holds():
    spec = PerturbationSpec(move="target", low=(6, 0, 0), high=(6, 0, 0), state="q", axis=0, above=0.5)
    env = MarkerEnv()
    env.reset(0)
    ep = spec.for_episode(0)
    assert not ep.maybe_apply(env, 0)
    env.q[0] = 0.7
    assert ep.maybe_apply(env, 4) and ep.applied_at == 4 and env.marker == 14
    assert not ep.maybe_apply(env, 5) and env.marker == 14


def test_offsets_are_seeded_and_within_bounds():
    spec = PerturbationSpec(move="target", low=(-0.1, -0.1, 0.0), high=(0.1, 0.1, 0.0), step=5)
    a, b = spec.offset(100000), spec.offset(100000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, spec.offset(100001))
    assert np.all(np.abs(a[:2]) <= 0.1) and a[2] == 0.0


def test_offsets_respect_min_norm_and_within():
    spec = PerturbationSpec(move="target", low=(-0.25, -0.25, 0.0), high=(0.25, 0.25, 0.0), step=5, min_norm=0.15,
                            within_low=(-0.2, -0.2, 0.0), within_high=(0.2, 0.2, 1.0))
    for seed in range(100000, 100050):
        pos = np.array([0.15, -0.1, 0.2])
        off = spec.offset(seed, pos)
        assert np.linalg.norm(off) >= 0.15 and np.all(np.abs((pos + off)[:2]) <= 0.2)
    tight = PerturbationSpec(move="target", low=(0.0, 0.0, 0.0), high=(0.01, 0.0, 0.0), step=5, min_norm=0.5)
    with pytest.raises(ConfigError, match="widen offset or within"):
        tight.offset(1, np.zeros(3), tries=50)


@pytest.mark.parametrize("setting,match", [
    (None, "has no perturbation"),
    ({"move": "target", "offset": {"low": [0, 0, 0], "high": [0, 0, 0]}, "when": {"step": 3, "state": "q"}},
     "exactly one of step or state"),
    ({"move": "target", "offset": {"low": [0, 0, 0], "high": [0, 0, 0]}, "when": {"state": "q"}},
     "exactly one of above or below"),
    ({"move": "target", "offset": {"low": [1, 0, 0], "high": [0, 0, 0]}, "when": {"step": 3}}, "low must be"),
])
def test_bad_perturbation_settings_name_the_fix(setting, match):
    with pytest.raises(ConfigError, match=match):
        perturbation_spec({"perturbation": setting} if setting else {}, "adroit/relocate")


def test_the_config_schema_refuses_a_misspelt_perturbation():
    from kubm.config import load_config, validate

    cfg = load_config([ROOT / "config/config.yaml"])
    cfg["suites"]["adroit"]["tasks"]["door"]["perturbation"]["wen"] = {"step": 3}
    with pytest.raises(ConfigError, match="wen"):
        validate(cfg)


# ----------------------------------------------------------------------------- real Adroit parts
def test_adroit_parts_move_and_the_moved_target_is_seen():
    from kubm.config import load_config, resolve_task
    from kubm.features.context import extract_context
    from kubm.sim.adroit import AdroitEnv

    settings = resolve_task(load_config([ROOT / "config/config.yaml"]), "adroit", "relocate").settings
    env = AdroitEnv("relocate")
    try:
        obs = env.reset(100000)
        before, c0 = env.object_state()[3:6].copy(), extract_context(settings, obs.rgb, obs.seg, 128, 128)
        env.move_part("target", [0.1, 0.0, 0.0])
        obs = env.step(np.asarray(obs.qpos))
        np.testing.assert_allclose(env.object_state()[3:6], before + [0.1, 0, 0], atol=1e-6)
        c1 = extract_context(settings, obs.rgb, obs.seg, 128, 128)
        assert np.max(np.abs(c1 - c0)) * 128 > 10.0  # more than the replan trigger's 10 px
        with pytest.raises(ConfigError, match="not a movable part"):
            env.move_part("door", [0, 0, 0])
        env.reset(100000)  # the reset re-randomises the target: no move outlives its episode
        np.testing.assert_allclose(env.object_state()[3:6], before, atol=1e-6)
    finally:
        env.close()
    door = AdroitEnv("door", render=False)
    try:
        door.reset(100000)
        handle = door.object_state()[2:5].copy()
        door.move_part("door", [0.05, 0.0, -0.04])
        np.testing.assert_allclose(door.object_state()[2:5], handle + [0.05, 0, -0.04], atol=1e-6)
    finally:
        door.close()


# ----------------------------------------------------------------------------- the stage
def test_perturbed_stage_on_relocate(tmp_path):
    """kubm evaluate --perturbed with stand-in policy and AE on the real relocate env: the
    document names the perturbation, every episode was perturbed at the configured step, and
    the replanning method has its open-loop outcomes per episode."""
    from kubm.config import load_config, resolve_task
    from kubm.evaluation.report import validate_eval
    from kubm.stages.evaluate import evaluate

    config = load_config([ROOT / "config/config.yaml"])
    config["evaluate"].update(episodes=2, videos=0)
    task = resolve_task(config, "adroit", "relocate")
    settings = {**task.settings, "horizon": 8,
                "perturbation": {"move": "target", "offset": {"low": [0.0, 0.2, 0.0], "high": [0.0, 0.2, 0.0]},
                                 "when": {"step": 3}}}
    task = dataclasses.replace(task, settings=settings)
    feats = _write_features(tmp_path / "features.zarr")
    out = tmp_path / "perturbed" / "eval.json"
    doc = evaluate(task, config, [_model_dir(tmp_path, seed=0)], tmp_path / "ae", feats, out, progress=False,
                   load_policy=lambda d: ContextPolicy(threshold=1e9), load_ae=lambda d: AdroitAE(), perturbed=True)
    validate_eval(json.loads(out.read_text()))
    assert doc["protocol"]["perturbation"]["move"] == "target"
    assert doc["protocol"]["context"]["replan_when_moved_px"] == 10.0
    m = doc["methods"]["fake"]
    assert m["perturbed_fraction"] == 1.0 and [e["perturbed_at"] for e in m["per_episode"]] == [2, 2]
    assert all(e["context_replans"] == 1 for e in m["per_episode"])  # the moved target was seen
    assert len(m["open_loop"]["per_episode_success"]) == 2
    with pytest.raises(ConfigError, match="has no perturbation"):
        evaluate(dataclasses.replace(task, settings={k: v for k, v in settings.items() if k != "perturbation"}),
                 config, [_model_dir(tmp_path, seed=1)], tmp_path / "ae", feats, out, progress=False,
                 load_policy=lambda d: ContextPolicy(), load_ae=lambda d: AdroitAE(), perturbed=True)
