"""The comparison of a run's eval.json with a recorded one: exact on the CPU kind that recorded
it, outcomes only on another (other float kernels move floats and can shift a replan)."""

import json

import conftest
from conftest import RECORDED_ON, check_recorded_eval, cpu_fingerprint

import pytest


def _doc(success=True, divergence=30.27):
    return {"methods": {"kubm": {"per_episode": [{"seed": 100000, "success": success, "divergence": divergence}]}}}


@pytest.fixture
def record(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "ROOT", tmp_path)
    (tmp_path / "tests/data").mkdir(parents=True)

    def write(doc, machine):
        (tmp_path / "tests/data/x.json").write_text(json.dumps({**doc, RECORDED_ON: machine}))
    return write


def test_same_cpu_is_exact(record):
    record(_doc(), cpu_fingerprint())
    check_recorded_eval(_doc(), "x")
    with pytest.raises(AssertionError):
        check_recorded_eval(_doc(divergence=30.2701), "x")


def test_another_cpu_checks_outcomes(record):
    record(_doc(), "another CPU / AVX2")
    with pytest.warns(UserWarning, match="outcomes only"):
        check_recorded_eval(_doc(divergence=31.0), "x")
    with pytest.raises(AssertionError, match="which episodes succeed"), pytest.warns(UserWarning):
        check_recorded_eval(_doc(success=False), "x")
