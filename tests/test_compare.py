"""Merging per-method evaluations into eval.json, and the cross-task summary."""

import json

import numpy as np
import pytest

from kubm.evaluation.merge import MergeError, merge_eval_files
from kubm.evaluation.report import method_summary, validate_eval, write_eval
from kubm.evaluation.rollout import EpisodeResult
from kubm.evaluation.summary import paired_difference, write_summary

SEEDS = [100000, 100001, 100002, 100003]


def _episode(seed, success, policy_s=0.01):
    T = 10
    return EpisodeResult(seed=seed, success=success, steps=T, replans=0, wall_s=1.0, policy_s=policy_s,
                         perception_s=0.02, divergence=np.full(T, np.nan), replanned=np.zeros(T, bool),
                         actions=np.zeros((T, 2)), smoothness=0.5)


def _method_doc(path, method, outcomes, *, task="relocate", horizon=10, policy_s=0.01, video=True):
    """outcomes[train_seed][j] = success on SEEDS[j]."""
    res = [(k, _episode(s, bool(o), policy_s)) for k, row in enumerate(outcomes) for s, o in zip(SEEDS, row)]
    art = path.stem
    videos = [f"{art}/videos/{method}_seed0_ep{SEEDS[0]}.mp4"] if video else []
    for v in videos:
        (path.parent / v).parent.mkdir(parents=True, exist_ok=True)
        (path.parent / v).write_bytes(b"x")
    doc = {"suite": "adroit", "task": task,
           "protocol": {"test_seeds": SEEDS, "episodes": len(SEEDS), "horizon": horizon, "success": "final step",
                        "replan": True, "min_replan_interval": 5, "segment_backend": "sim", "track_backend": "sim",
                        "n_points": 256},
           "methods": {method: method_summary(res)}, "artifacts": {"videos": videos, "plots": []},
           "versions": {"kubm": "0"}, "config_hash": f"h-{method}"}
    write_eval(doc, path)
    return path


@pytest.fixture
def per_method(tmp_path):
    d = tmp_path / "results/adroit/relocate/methods"
    d.mkdir(parents=True)
    kubm = _method_doc(d / "kubm.json", "kubm", [[1, 0, 0, 1], [1, 0, 1, 1]], policy_s=0.002)
    kodex = _method_doc(d / "kodex.json", "kodex", [[1, 1, 1, 1], [1, 1, 0, 1]], policy_s=0.004)
    return tmp_path, kubm, kodex


def test_merge_keeps_config_order_and_rebases_artifacts(per_method):
    root, kubm, kodex = per_method
    out = root / "results/adroit/relocate/eval.json"
    doc = merge_eval_files([kodex, kubm], out, suite="adroit", task="relocate", order=["kubm", "kodex"])
    validate_eval(doc)
    assert list(doc["methods"]) == ["kubm", "kodex"]
    for rel in doc["artifacts"]["videos"]:
        assert (out.parent / rel).is_file(), rel
    assert json.loads(out.read_text())["methods"]["kodex"]["success_rate"] == pytest.approx(0.875)


def test_merge_refuses_other_protocol_task_or_missing_method(per_method, tmp_path):
    root, kubm, kodex = per_method
    other = _method_doc(kubm.parent / "regression.json", "regression", [[1, 1, 1, 1]], horizon=20)
    out = root / "eval.json"
    with pytest.raises(MergeError, match="protocol.horizon"):
        merge_eval_files([kubm, other], out, suite="adroit", task="relocate")
    door = _method_doc(kubm.parent / "door.json", "act", [[1, 1, 1, 1]], task="door")
    with pytest.raises(MergeError, match="adroit/door, not adroit/relocate"):
        merge_eval_files([kubm, door], out, suite="adroit", task="relocate")
    with pytest.raises(MergeError, match=r"lists methods \['act'\]"):
        merge_eval_files([kubm, kodex], out, suite="adroit", task="relocate", order=["kubm", "kodex", "act"])
    with pytest.raises(MergeError, match="does not exist"):
        merge_eval_files([kubm, root / "nope.json"], out, suite="adroit", task="relocate")
    assert not out.exists()


def test_paired_difference_is_per_test_seed():
    a = {"per_episode": [{"seed": s, "success": o} for s, o in zip(SEEDS * 2, [1, 1, 1, 1, 1, 1, 0, 1])]}
    b = {"per_episode": [{"seed": s, "success": o} for s, o in zip(SEEDS * 2, [1, 0, 0, 1, 1, 0, 1, 1])]}
    d = paired_difference(a, b)
    # per test seed: a = [1, 1, .5, 1], b = [1, 0, .5, 1] -> differences [0, 1, 0, 0]
    assert d["mean"] == pytest.approx(0.25) and d["n_test_seeds"] == 4
    assert (d["better"], d["worse"], d["ties"]) == (1, 0, 3)
    assert d["ci95"][0] < 0.25 < d["ci95"][1]


def test_summary_tables_plots_and_latency_ratio(per_method):
    root, kubm, kodex = per_method
    ev = root / "results/adroit/relocate/eval.json"
    merge_eval_files([kubm, kodex], ev, suite="adroit", task="relocate", order=["kubm", "kodex"])
    s = write_summary([ev], root / "results/summary.md")
    row = s["tasks"]["adroit/relocate"]["methods"]["kodex"]
    assert row["successes"] == 7 and row["episodes"] == 8
    assert row["latency_ratio_to_kubm"] == pytest.approx(2.0, rel=1e-6)
    assert row["paired_difference_vs_kubm"]["mean"] == pytest.approx(0.25)
    assert "paired_difference_vs_kubm" not in s["tasks"]["adroit/relocate"]["methods"]["kubm"]
    md = (root / "results/summary.md").read_text()
    assert "| kodex | 88 |" in md and "| kubm | 62 |" in md
    for p in ("success.png", "latency.png"):
        assert (root / "results/summary_plots" / p).stat().st_size > 1000
    assert json.loads((root / "results/summary.json").read_text())["methods"] == ["kubm", "kodex"]


def test_summary_interval_counts_identical_models_once(per_method):
    root, kubm, _ = per_method
    d = kubm.parent
    twin = _method_doc(d / "regression.json", "regression", [[1, 1, 0, 1], [1, 1, 0, 1]])
    doc = json.loads(twin.read_text())
    doc["methods"]["regression"]["identical_to"] = {"1": 0}
    write_eval(doc, twin)
    ev = root / "results/adroit/relocate/eval.json"
    merge_eval_files([kubm, twin], ev, suite="adroit", task="relocate")
    s = write_summary([ev], root / "results/summary.md")
    row = s["tasks"]["adroit/relocate"]["methods"]["regression"]
    from kubm.evaluation.metrics import wilson_interval

    assert row["distinct_models"] == 1 and row["ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert "(1 distinct model)" in (root / "results/summary.md").read_text()


def test_readme_results_block_is_generated_from_the_summary(per_method, tmp_path):
    from kubm.evaluation.summary import README_BEGIN, README_END, update_readme

    root, kubm, kodex = per_method
    ev = root / "results/adroit/relocate/eval.json"
    merge_eval_files([kubm, kodex], ev, suite="adroit", task="relocate", order=["kubm", "kodex"])
    s = write_summary([ev], root / "results/summary.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nstale numbers\n{README_END}\nafter\n")
    update_readme(readme, s, "results/summary.json")
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("intro\n") and text.endswith("after\n")
    row = next(line for line in text.splitlines() if line.startswith("| adroit/relocate"))
    assert "| 62 [" in row and "| 88 [" in row and "(2×4)" in row
    readme.write_text("no block here\n")
    with pytest.raises(ValueError, match="no .* block"):
        update_readme(readme, s, "results/summary.json")
