"""Adding a method is one package plus one registry line (docs/design.md, "Policies").

A toy method (always the mean training action, a planner) is written as a package of its
own. In process it is registered and fitted, saved, loaded and compared like any method;
in a copy of the source tree, one line in ``policies/registry.py`` is enough for the
config and the Snakemake DAG to take it up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.policies import load_policy
from kubm.policies.registry import METHODS, MethodSpec
from kubm.stages.fit import fit
from tests.test_fit import StandInAE, write_features

ROOT = Path(__file__).resolve().parents[1]

TOY = {
    "__init__.py": '"""A toy method: the mean training action, planned for every step."""\n',
    "configuration_toy.py": '''
        from dataclasses import dataclass, asdict

        @dataclass
        class ToyConfig:
            shrink: float = 1.0  # multiplies the mean action

            @classmethod
            def from_dict(cls, d):
                return cls(**d)

            def to_dict(self):
                return asdict(self)
        ''',
    "modeling_toy.py": '''
        import json
        from pathlib import Path

        import numpy as np

        from kubm.policies.base import Plan

        class ToyPolicy:
            method = "toy"

            def __init__(self, mean, d_flow, d_c, task_id=None, seed=None):
                self.mean, self.d_flow, self.d_c = np.asarray(mean, np.float32), int(d_flow), int(d_c)
                self.d_q = len(self.mean)
                self.task_id, self.seed, self.replan_threshold_px = task_id, seed, None

            def plan(self, qpos0, flow0, context=None, T=200):
                return Plan(actions=np.tile(self.mean, (int(T), 1)), flow=None)

            def save(self, directory):
                d = Path(directory)
                d.mkdir(parents=True, exist_ok=True)
                (d / "config.json").write_text(json.dumps({"method": "toy", "mean": self.mean.tolist(),
                                                           "d_flow": self.d_flow, "d_c": self.d_c, "task": self.task_id,
                                                           "seed": self.seed}))
                return d

            @classmethod
            def load(cls, directory):
                m = json.loads((Path(directory) / "config.json").read_text())
                return cls(m["mean"], m["d_flow"], m["d_c"], m["task"], m["seed"])
        ''',
    "fitting_toy.py": '''
        import numpy as np

        from toy_method.modeling_toy import ToyPolicy

        def fit(cfg, inputs, out):
            mean = cfg.shrink * np.concatenate([ep.action for ep in inputs.train.episodes]).mean(axis=0)
            ToyPolicy(mean, inputs.train.d_flow, inputs.train.d_c, inputs.task_id, inputs.seed).save(out)
            return {"method": "toy", "seed": inputs.seed, "train_wall_s": 0.0}
        ''',
}


def write_toy(root: Path) -> Path:
    pkg = root / "toy_method"
    pkg.mkdir(parents=True)
    for name, text in TOY.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return root


def spec() -> MethodSpec:
    return MethodSpec("toy_method.configuration_toy:ToyConfig", "toy_method.fitting_toy:fit",
                      "toy_method.modeling_toy:ToyPolicy")


@pytest.fixture
def toy_registered(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_toy(tmp_path / "plugin")))
    monkeypatch.setitem(METHODS, "toy", spec())
    yield


def test_a_registered_method_is_configured_fitted_and_loaded(toy_registered, tmp_path):
    config = load_config([DEFAULT_CONFIG])
    config["suites"]["adroit"]["tasks"]["relocate"]["methods"] = ["kubm", "toy"]
    config["fit"]["toy"] = {"shrink": 0.5}
    from kubm.config import validate

    config = validate(config)  # the schema's method list comes from the registry
    task = resolve_task(config, "adroit", "relocate")
    train, test = write_features(tmp_path / "train.zarr"), write_features(tmp_path / "test.zarr", n_eps=2, seed=1)
    summary = fit(task, config, "toy", 0, train, test, None, tmp_path / "toy/seed0", ae=StandInAE())
    assert summary["method"] == "toy" and summary["fit_config"] == {"shrink": 0.5}
    policy = load_policy(tmp_path / "toy/seed0")
    assert type(policy).__name__ == "ToyPolicy"
    from kubm.policies.features import load_features

    acts = np.concatenate([ep.action for ep in load_features(train).episodes])
    np.testing.assert_allclose(policy.plan(None, None, None, 3).actions[0], 0.5 * acts.mean(axis=0), rtol=1e-5)
    from kubm.evaluation.openloop import openloop_report

    report = openloop_report([tmp_path / "toy/seed0"], test, task_id="adroit/relocate")
    assert report["methods"]["toy"]["pooled"]["action_rms_rad"] > 0


def test_an_unregistered_method_is_refused_at_config_time():
    from kubm.config import validate
    from kubm.errors import ConfigError

    config = load_config([DEFAULT_CONFIG])
    config["suites"]["adroit"]["tasks"]["relocate"]["methods"] = ["kubm", "toy"]
    with pytest.raises(ConfigError, match="toy"):
        validate(config)


def test_one_registry_line_puts_the_method_in_the_dag(tmp_path):
    """A copy of src/ with the toy package and one added registry line: the DAG plans its fits."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "kubm", src / "kubm", ignore=shutil.ignore_patterns("__pycache__"))
    write_toy(src)
    registry = src / "kubm" / "policies" / "registry.py"
    text = registry.read_text()
    line = ('    "toy": MethodSpec("toy_method.configuration_toy:ToyConfig", "toy_method.fitting_toy:fit", '
            '"toy_method.modeling_toy:ToyPolicy"),\n')
    anchor = '    "act": _spec("act", "ActConfig", "ActPolicy"),\n'
    assert anchor in text
    registry.write_text(text.replace(anchor, anchor + line))
    extra = tmp_path / "toy.yaml"
    extra.write_text("suites: {adroit: {tasks: {relocate: {methods: [kubm, toy]}}}}\nfit: {n_seeds: 2}\n")
    env = {**os.environ, "PYTHONPATH": str(src)}
    snakemake = Path(sys.executable).parent / "snakemake"
    out = subprocess.run([str(snakemake), "-n", "--quiet", "rules", "--configfile", "config/config.yaml", str(extra),
                          "--", "results/adroit/relocate/eval.json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    dry = subprocess.run([str(snakemake), "-n", "--configfile", "config/config.yaml", str(extra), "--forceall",
                          "results/adroit/relocate/eval.json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    log = dry.stdout + dry.stderr
    assert "models/adroit/relocate/toy/seed0" in log and "models/adroit/relocate/toy/seed1" in log
    assert "results/adroit/relocate/methods/toy.json" in log
    json.dumps(log[:10])  # the log is text
