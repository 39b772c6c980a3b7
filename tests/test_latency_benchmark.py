"""benchmarks/latency.py: every method's per-step policy time, in one process, on the same features."""

import json
import sys
from pathlib import Path

import pytest

from test_fit import StandInAE, setup, write_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_latency_benchmark_reports_ratios_to_kubm(tmp_path, capsys):
    import latency

    from kubm.stages.fit import fit

    train, test = write_features(tmp_path / "train.zarr"), write_features(tmp_path / "test.zarr", seed=1, n_eps=3)
    task, config = setup()
    root = tmp_path / "models"
    for method in ("kubm", "regression"):
        fit(task, config, method, 0, train, test, None, root / "adroit/relocate" / method / "seed0",
            threads=1, progress=False, ae=StandInAE())
    out = latency.main(["--task", "adroit/relocate", "--models", str(root), "--features", str(test),
                        "--methods", "kubm", "regression", "--episodes", "2"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == out and out["episodes"] == 2
    assert set(out["methods"]) == {"kubm", "regression"}
    assert all(v["median_ms"] > 0 for v in out["methods"].values())
    assert out["ratio_to_kubm"]["kubm"] == 1.0 and out["ratio_to_kubm"]["regression"] > 0
    with pytest.raises(SystemExit, match="no fitted model for \\['act'\\]"):
        latency.main(["--task", "adroit/relocate", "--models", str(root), "--features", str(test), "--methods", "act"])
