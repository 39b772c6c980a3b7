"""Episodes rolled out in worker processes give the same eval.json as in one process.

`kubm evaluate --workers N` (the evaluate rule passes its threads) runs each episode in one of
N processes with its own simulator. Every episode is seeded, so only timing fields may differ.
Real components throughout: the MuJoCo relocate env, sim perception, a saved flow AE (random
weights) and regression models fitted by the fit stage."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import stable_eval

from kubm.config import DEFAULT_CONFIG, load_config, resolve_task
from kubm.features.flow_ae import WEIGHTS, FlowAE, FlowAEConfig, FlowAutoencoder, sha256_file
from kubm.stages.evaluate import EvaluationError, evaluate
from kubm.stages.fit import fit
from kubm.storage.episode_store import ArraySpec, EpisodeWriter

D_Q, D_FLOW, D_C, T = 30, 8, 2, 10


def _features(path, ae_dir, n_eps, seed):
    rng = np.random.default_rng(seed)
    attrs = {"d_q": D_Q, "d_flow": D_FLOW, "d_c": D_C, "width": 128, "height": 128, "suite": "adroit",
             "task": "relocate", "ae": {"dir": str(ae_dir), "sha256": sha256_file(ae_dir / WEIGHTS)}}
    data = [ArraySpec("flow", (D_FLOW,), "float32"), ArraySpec("qpos", (D_Q,), "float32"),
            ArraySpec("action", (D_Q,), "float32"), ArraySpec("context", (D_C,), "float32")]
    with EpisodeWriter(path, producer="encode", data=data, meta={"seed": "int64"}, attrs=attrs) as w:
        for e in range(n_eps):
            action = (0.05 * rng.normal(size=(T, D_Q))).astype(np.float32)
            w.append_episode({"flow": rng.normal(size=(T, D_FLOW)).astype(np.float32), "qpos": action,
                              "action": action, "context": np.tile(rng.uniform(20, 100, D_C), (T, 1)).astype(np.float32)},
                             {"seed": seed * 100 + e})
        w.finish()
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    ae_dir = FlowAE(FlowAutoencoder(FlowAEConfig(n_points=256, latent_dim=D_FLOW, hidden=[16])), 128, 128).save(
        tmp / "ae")
    train, test = _features(tmp / "train.zarr", ae_dir, 4, 0), _features(tmp / "test.zarr", ae_dir, 1, 1)
    config = load_config([DEFAULT_CONFIG])
    config["evaluate"].update(episodes=3, videos=1)
    task = resolve_task(config, "adroit", "relocate")
    task = dataclasses.replace(task, settings={**task.settings, "horizon": T})
    models = []
    for seed in (0, 1):  # closed form: identical twins, rolled out once
        out = tmp / "models" / "regression" / f"seed{seed}"
        fit(task, config, "regression", seed, train, test, ae_dir, out, progress=False)
        models.append(out)
    return task, config, models, ae_dir, test, tmp


def test_two_workers_give_the_same_document_as_one(setup):
    task, config, models, ae_dir, test, tmp = setup
    docs = {}
    for workers in (1, 2):
        out = tmp / f"w{workers}" / "eval.json"
        evaluate(task, config, models, ae_dir, test, out, progress=False, workers=workers)
        docs[workers] = json.loads(out.read_text())
    one, two = docs[1], docs[2]
    assert len(one["methods"]["regression"]["per_episode"]) == 6  # 2 seeds x 3 episodes, one rolled out
    assert one["methods"]["regression"]["identical_to"] == {"1": 0}
    assert one["artifacts"]["videos"] == two["artifacts"]["videos"] == ["videos/regression_seed0_ep100000.mp4"]
    assert (tmp / "w2" / "videos" / "regression_seed0_ep100000.mp4").stat().st_size > 0
    assert stable_eval(one) == stable_eval(two)


def test_workers_refuse_custom_loaders(setup):
    task, config, models, ae_dir, test, tmp = setup
    with pytest.raises(EvaluationError, match="custom loaders run with workers=1 only"):
        evaluate(task, config, models, ae_dir, test, tmp / "x" / "eval.json", progress=False, workers=2,
                 load_ae=lambda d: None)
