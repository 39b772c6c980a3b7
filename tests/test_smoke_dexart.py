"""The whole DAG on a tiny dexart/bucket run (SAPIEN 3 on CPU lavapipe) reaches eval.json."""

import json
import subprocess

import numpy as np
import pytest

from kubm.storage.episode_store import EpisodeStore

from conftest import check_recorded_eval, copy_project, run

pytestmark = pytest.mark.smoke


def test_dexart_bucket_dag_reaches_eval(tmp_path):
    proj = copy_project(tmp_path / "proj")
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    run(["snakemake", "--cores", "2", "--configfile", "config/smoke_dexart.yaml"], cwd=proj, timeout=1800)
    demos = EpisodeStore.open(proj / "data/dexart/bucket/demos/train.zarr", producer="collect")
    assert demos.n_episodes == 2 and demos.attrs["d_q"] == 22 and demos.attrs["simulator"] == "sapien"
    assert np.isin(demos.array("seg")[0], demos.attrs["seg_object_ids"]).any()
    tracks = json.loads((proj / "results/dexart/bucket/qc/track_train.metrics.json").read_text())
    assert tracks["backend"] == "sim"
    doc = json.loads((proj / "results/dexart/bucket/eval.json").read_text())
    assert doc["suite"] == "dexart" and len(doc["methods"]["kubm"]["per_episode"]) == 2
    check_recorded_eval(doc, "smoke_eval_dexart_bucket")  # same config, same result: speed work moves nothing
