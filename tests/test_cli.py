from typer.testing import CliRunner

from kubm.cli import app

runner = CliRunner()


def test_help_lists_stages():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("collect", "doctor", "info", "check-config", "segment", "evaluate"):
        assert cmd in res.output


def test_check_config(root, monkeypatch):
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["check-config"])
    assert res.exit_code == 0, res.output
    assert "adroit/relocate: expert=adroit_relocate" in res.output
    assert "dexart/bucket" in res.output


def test_collect_unknown_task_is_clear(root, monkeypatch):
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["collect", "adroit/drawer", "--split", "train"])
    assert res.exit_code == 2
    assert "unknown task 'drawer'" in res.output and "relocate" in res.output


def test_collect_bad_split(root, monkeypatch):
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["collect", "adroit/relocate", "--split", "val"])
    assert res.exit_code == 2 and "allowed values: ['train', 'test']" in res.output


def test_config_typo_reaches_cli(tmp_path, root, monkeypatch):
    monkeypatch.chdir(root)
    bad = tmp_path / "bad.yaml"
    bad.write_text("suites:\n  adroit:\n    defaults:\n      n_demo: {train: 1}\n")
    res = runner.invoke(app, ["check-config", "-c", "config/config.yaml", "-c", str(bad)])
    assert res.exit_code == 2
    assert "unknown key(s) ['n_demo'] (did you mean n_demo -> n_demos?)" in res.output


def test_config_key_in_the_wrong_case_names_the_right_one(tmp_path, root, monkeypatch):
    monkeypatch.chdir(root)
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit:\n  kubm:\n    lr_k: 0.01\n    zzz: 1\n")
    res = runner.invoke(app, ["check-config", "-c", str(bad)])
    assert res.exit_code == 2
    assert "unknown key(s) ['lr_k', 'zzz'] (did you mean lr_k -> lr_K?)" in res.output


def test_dvc_yaml_in_step(root, monkeypatch):
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["dvc-yaml", "--check"])
    assert res.exit_code == 0, res.output


def test_collect_reports_broken_renderer(tmp_path, root):
    """A GL backend that cannot start: collect says what to install, and writes nothing."""
    from conftest import run

    out = tmp_path / "demos.zarr"
    proc = run(["kubm", "collect", "adroit/relocate", "--split", "test", "--out", str(out), "--no-progress",
                "-c", "config/config.yaml", "-c", "config/smoke.yaml"],
               env={"MUJOCO_GL": "glx", "DISPLAY": "", "PYOPENGL_PLATFORM": ""}, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    msg = proc.stdout + proc.stderr
    assert "MUJOCO_GL" in msg and ("apt-get install" in msg or "egl" in msg)
    assert not out.exists()


def test_interrupted_collect_leaves_no_store(tmp_path, root, monkeypatch):
    """An expert that dies mid-collection: no store (complete or not) appears at the output path."""
    from kubm.config import load_config, resolve_task
    from kubm.experts import registry
    from kubm.stages import collect as collect_stage

    class Boom:
        name = "boom"
        calls = 0

        def reset(self, env, seed):
            pass

        def act(self, env):
            Boom.calls += 1
            if Boom.calls > 150:
                raise KeyboardInterrupt
            return env.data.qpos[env.qpos_adr].copy()

    monkeypatch.setattr(registry, "make_expert", lambda name, params=None: Boom())
    cfg = load_config([root / "config/config.yaml", root / "config/smoke.yaml"])
    task = resolve_task(cfg, "adroit", "relocate")
    out = tmp_path / "demos.zarr"
    import pytest

    with pytest.raises(KeyboardInterrupt):
        collect_stage.collect(task, "test", out, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_user_errors_exit_2_and_bugs_keep_their_traceback(monkeypatch):
    """The CLI catches the KubmError family only: a user error is one line and exit 2; any
    other exception (a bug) propagates with its traceback instead of posing as bad input."""
    import kubm.stages.fit as fit_stage
    from typer.testing import CliRunner

    from kubm.cli import app
    from kubm.errors import KubmError, PolicyError

    args = ["fit", "adroit/relocate", "--train", "a.zarr", "--test", "b.zarr", "--ae", "ae", "--out", "m"]

    def raises(exc):
        def fake_fit(*a, **k):
            raise exc
        return fake_fit

    monkeypatch.setattr(fit_stage, "fit", raises(KubmError("bad input: fix it")))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "bad input: fix it" in r.output

    diverged = PolicyError("diverged")
    diverged.exit_code = 1
    monkeypatch.setattr(fit_stage, "fit", raises(diverged))
    assert CliRunner().invoke(app, args).exit_code == 1

    monkeypatch.setattr(fit_stage, "fit", raises(ValueError("a programming error")))
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, ValueError) and not isinstance(r.exception, SystemExit)
