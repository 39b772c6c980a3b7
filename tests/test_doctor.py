"""`kubm doctor`: check names, failure reporting and exit code; subprocess probes faked."""

import pytest

from kubm import doctor
from kubm.doctor import CheckResult, ProbeResult


@pytest.fixture
def probes(monkeypatch):
    """Fake the subprocess helper: `probes[backend]` decides each GL probe's outcome."""
    outcomes = {"egl": True, "osmesa": True, "sapien": True}
    calls = []

    def fake(code, env, timeout=doctor.PROBE_TIMEOUT_S):
        key = env.get("MUJOCO_GL", "sapien")
        calls.append(key)
        if not outcomes.get(key, False):
            return ProbeResult(False, f"RuntimeError: {key} is broken")
        if key == "sapien":
            return ProbeResult(True, '{"name": "llvmpipe (fake)", "cpu": false, "cuda": false}')
        return ProbeResult(True, '{"gl": "llvmpipe (fake)"}')

    monkeypatch.setattr(doctor, "_run_probe", fake)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    outcomes["calls"] = calls
    return outcomes


@pytest.fixture(autouse=True)
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBM_SAM2_CKPT", "KUBM_SAM3_CKPT", "KUBM_COTRACKER_CKPT", "KUBM_WEIGHTS_DIR",
                "HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def by_name(results):
    return {r.name: r for r in results}


def test_run_checks_names(probes):
    results = doctor.run_checks()
    assert all(isinstance(r, CheckResult) for r in results)
    names = [r.name for r in results]
    expected = {
        "python", "torch", "numpy", "mujoco", "gymnasium", "gymnasium-robotics", "sapien",
        "zarr", "snakemake", "dvc", "mujoco-gl", "sapien-render", "disk", "gpu",
        "weights:sam2.1_hiera_tiny", "weights:sam3",
        "weights:cotracker3_offline", "weights:cotracker3_online",
    }
    assert expected == set(names)
    assert len(names) == len(set(names))


def test_missing_weights_are_warnings_with_fetch_command(probes):
    res = by_name(doctor.run_checks())
    sam3 = res["weights:sam3"]
    assert sam3.ok is None and "gated" in sam3.fix
    assert "wget" in res["weights:cotracker3_offline"].fix


def test_weights_from_config_are_verified(tmp_path, probes):
    import torch

    ckpt = tmp_path / "sam3.pt"
    torch.save({"w": torch.arange(1000.0)}, ckpt)
    res = by_name(doctor.check_weights({"weights": {"sam3": str(ckpt)}}))
    assert res["weights:sam3"].ok is True and str(ckpt) in res["weights:sam3"].detail
    # an interrupted download: the same file cut short is a failure naming the file and the fix
    ckpt.write_bytes(ckpt.read_bytes()[:-200])
    res = by_name(doctor.check_weights({"weights": {"sam3": str(ckpt)}}))
    assert res["weights:sam3"].ok is False and str(ckpt) in res["weights:sam3"].detail
    assert "truncated" in res["weights:sam3"].detail and "huggingface-cli download" in res["weights:sam3"].fix
    ckpt.write_bytes(b"x")
    assert by_name(doctor.check_weights({"weights": {"sam3": str(ckpt)}}))["weights:sam3"].ok is False


def test_doctor_exits_nonzero_on_a_corrupt_checkpoint(tmp_path, probes, capsys):
    ckpt = tmp_path / "sam3.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert doctor.main({"weights": {"sam3": str(ckpt)}}) == 1
    assert "weights:sam3" in capsys.readouterr().out


def test_broken_egl_fails_and_names_the_working_fallback(probes):
    # the pipeline would render with the broken backend: that is a failure, with the fix
    probes["egl"] = False
    r = doctor.check_mujoco_gl()
    assert r.ok is False
    assert "egl" in r.detail and "osmesa works" in r.detail
    assert "MUJOCO_GL=osmesa" in r.fix and "libegl1" in r.fix


def test_no_gl_backend_fails_with_fix(probes, capsys):
    probes["egl"] = probes["osmesa"] = False
    r = doctor.check_mujoco_gl()
    assert r.ok is False
    assert "egl is broken" in r.detail
    assert "libegl1" in r.fix and "libosmesa6" in r.fix and "export MUJOCO_GL=egl" in r.fix
    assert doctor.main() == 1
    out = capsys.readouterr().out
    assert "mujoco-gl" in out and "libosmesa6" in out


def test_sapien_without_device_fails_with_fix(probes):
    probes["sapien"] = False
    r = doctor.check_sapien_render()
    assert r.ok is False
    assert "bookworm-backports" in r.fix and "make setup" in r.fix


def test_sapien_reports_device_name(probes):
    assert "llvmpipe (fake)" in doctor.check_sapien_render().detail


def test_missing_package_is_failure(monkeypatch):
    monkeypatch.setattr(doctor, "PACKAGES", ("surely-not-installed-pkg",))
    (r,) = doctor.check_packages()
    assert r.ok is False and r.fix == "make setup"


def test_disk_thresholds(monkeypatch, tmp_path):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    for free_gb, ok in ((50, True), (5, None), (0.5, False)):
        monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p, f=free_gb: usage(0, 0, int(f * doctor.GB)))
        assert doctor.check_disk(tmp_path).ok is ok


def test_error_line_skips_del_noise():
    text = (
        "warning\nTraceback (most recent call last):\n  File x\nmujoco.FatalError: no context\n"
        "Exception ignored in: <function R.__del__>\nTraceback (most recent call last):\n"
        "AttributeError: noise\n"
    )
    assert doctor._error_line(text) == "mujoco.FatalError: no context"


def test_real_probe_helper_reports_failure():
    # One cheap real subprocess: the helper must turn a crash into a result, not raise.
    r = doctor._run_probe("raise SystemExit('boom')", {}, timeout=30)
    assert r.ok is False and "boom" in r.out
    assert doctor._run_probe("print('hi')", {}, timeout=30) == ProbeResult(True, "hi")
