"""`kubm doctor`: preflight checks for the machine, each with a fix hint.

Rendering checks run in a subprocess with a timeout, because a broken GL or Vulkan
driver can segfault or hang the interpreter, and doctor must still print its table.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kubm.perception import weights

SETUP_FIX = "make setup"
# Distributions checked against the specifiers kubm declares (pins live in pyproject.toml).
PACKAGES = (
    "torch",
    "numpy",
    "mujoco",
    "gymnasium",
    "gymnasium-robotics",
    "sapien",
    "zarr",
    "snakemake",
    "dvc",
)
# Checkpoints reported by doctor; the sim backends need none, so these are warnings.
DOCTOR_MODELS = ("sam2.1_hiera_tiny", "sam3", "cotracker3_offline", "cotracker3_online")
GB = 1024**3
PROBE_TIMEOUT_S = 120.0


@dataclass
class CheckResult:
    name: str
    ok: bool | None  # True pass, None warning, False failure
    detail: str
    fix: str = ""

    @property
    def status(self) -> str:
        return {True: "ok", None: "warn", False: "FAIL"}[self.ok]


@dataclass
class ProbeResult:
    ok: bool
    out: str  # last stdout line (JSON from the probe) or the error tail


def _run_probe(code: str, env: dict[str, str], timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Run `code` in a fresh interpreter; ok when it exits 0. Tests monkeypatch this."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"timed out after {timeout:.0f} s")
    if proc.returncode == 0:
        lines = proc.stdout.strip().splitlines()
        return ProbeResult(True, lines[-1] if lines else "")
    return ProbeResult(False, _error_line(proc.stderr or proc.stdout) or f"exit code {proc.returncode}")


def _error_line(text: str) -> str:
    """The exception line of the first traceback; later ones are often __del__ noise."""
    lines = text.strip().splitlines()
    in_tb = False
    for line in lines:
        if line.startswith("Traceback"):
            in_tb = True
        elif in_tb and line and not line[0].isspace():
            return line
    return lines[-1] if lines else ""


# --- versions -------------------------------------------------------------------------


def _requirements() -> dict[str, str]:
    """Version specifiers kubm declares, keyed by normalised distribution name."""
    try:
        from packaging.requirements import Requirement

        reqs = [Requirement(r) for r in md.requires("kubm") or []]
    except Exception:  # kubm not installed as a distribution, or no packaging
        return {}
    return {_norm(r.name): str(r.specifier) for r in reqs if not r.marker}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _version_ok(version: str, spec: str) -> bool:
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(spec).contains(version, prereleases=True)
    except Exception:
        return True  # cannot judge; the version is still shown


def check_python() -> CheckResult:
    v = sys.version_info
    ok = v >= (3, 11)
    return CheckResult(
        "python",
        ok,
        f"{platform.python_version()} ({sys.executable})",
        "" if ok else "use Python >= 3.11 (make setup prefers python3.11)",
    )


def _torch_build() -> str:
    import torch  # imported here: costs a second and only this check needs it

    if torch.version.cuda:
        return f"CUDA {torch.version.cuda} build"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip} build"
    return "CPU build"


def check_packages() -> list[CheckResult]:
    wanted = _requirements()
    results = []
    for dist in PACKAGES:
        spec = wanted.get(_norm(dist), "")
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            results.append(CheckResult(dist, False, f"not installed (wants {dist}{spec})", SETUP_FIX))
            continue
        detail = version if not spec else f"{version} (wants {spec})"
        ok = _version_ok(version, spec)
        if dist == "torch":
            try:
                detail += f", {_torch_build()}"
            except Exception as exc:  # installed but broken import
                ok, detail = False, f"{version}, import failed: {exc}"
        results.append(CheckResult(dist, ok, detail, "" if ok else SETUP_FIX))
    return results


# --- rendering ------------------------------------------------------------------------

# One 32x32 frame of a lit sphere; MSAA off as the envs do. Prints the GL renderer.
_MUJOCO_PROBE = """
import json, mujoco
m = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 1'/><geom type='sphere' size='.1'/></worldbody></mujoco>")
m.vis.quality.offsamples = 0
r = mujoco.Renderer(m, 32, 32)
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r.update_scene(d)
img = r.render()
try:
    from OpenGL import GL
    gl = GL.glGetString(GL.GL_RENDERER).decode() + ", " + GL.glGetString(GL.GL_VERSION).decode()
except Exception:
    gl = "unknown renderer"
r.close()  # explicit close avoids EGL teardown noise at exit
assert img.shape == (32, 32, 3) and img.any(), "blank frame"
print(json.dumps({"gl": gl}))
"""

_GL_FIX = {
    "egl": "apt-get install -y libegl1 libgl1 (or `make setup`); export MUJOCO_GL=egl",
    "osmesa": "apt-get install -y libosmesa6 (or `make setup`); export MUJOCO_GL=osmesa",
}


def _probe_gl(backend: str) -> ProbeResult:
    # PyOpenGL must agree with MuJoCo on the platform, or the context calls fail.
    return _run_probe(_MUJOCO_PROBE, {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend})


def check_mujoco_gl() -> CheckResult:
    wanted = os.environ.get("MUJOCO_GL") or "egl"
    failures = []
    for backend in dict.fromkeys([wanted, "egl", "osmesa"]):
        res = _probe_gl(backend)
        if not res.ok:
            failures.append(f"{backend}: {res.out}")
            continue
        try:
            gl = json.loads(res.out)["gl"]
        except (ValueError, KeyError, TypeError):
            gl = res.out
        if backend == wanted:
            return CheckResult("mujoco-gl", True, f"MUJOCO_GL={backend} renders ({gl})")
        # the pipeline renders with the backend this environment selects: it would fail
        return CheckResult(
            "mujoco-gl",
            False,
            f"MUJOCO_GL={wanted} fails ({failures[0]}); {backend} works ({gl})",
            f"export MUJOCO_GL={backend}, or fix {wanted}: {_GL_FIX.get(wanted, SETUP_FIX)}",
        )
    return CheckResult(
        "mujoco-gl",
        False,
        "no offscreen GL backend renders; " + "; ".join(failures),
        f"{_GL_FIX['egl']}  |  fallback: {_GL_FIX['osmesa']}",
    )


_SAPIEN_PROBE = """
import json, sapien
scene = sapien.Scene()  # raises "failed to find a rendering device" without Vulkan
dev = scene.render_system.device
print(json.dumps({"name": dev.name, "cpu": dev.is_cpu(), "cuda": dev.is_cuda()}))
"""

SAPIEN_FIX = (
    "make setup (installs libvulkan1 and Mesa >= 25 lavapipe `mesa-vulkan-drivers` "
    "from bookworm-backports; bookworm's Mesa 22 is rejected by SAPIEN)"
)


def check_sapien_render() -> CheckResult:
    res = _run_probe(_SAPIEN_PROBE, {})
    if not res.ok:
        return CheckResult("sapien-render", False, f"no Vulkan render device: {res.out}", SAPIEN_FIX)
    try:
        name = json.loads(res.out)["name"]
    except (ValueError, KeyError, TypeError):
        name = res.out
    # llvmpipe is lavapipe (CPU): it works, just slower than a GPU.
    return CheckResult("sapien-render", True, f"render device: {name}")


# --- disk, weights, GPU ---------------------------------------------------------------


def check_disk(path: str | os.PathLike = ".") -> CheckResult:
    free = shutil.disk_usage(path).free
    detail = f"{free / GB:.1f} GB free in {Path(path).resolve()}"
    if free < 1 * GB:
        return CheckResult("disk", False, detail, "free disk space (data, models, venv need > 10 GB)")
    if free < 10 * GB:
        return CheckResult("disk", None, detail, "under 10 GB: demos and videos may not fit")
    return CheckResult("disk", True, detail)


def _config_checkpoint(config: dict | None, model: str) -> str | None:
    # Configs may pin a path per model under `weights:` (e.g. weights: {sam3: /x/sam3.pt}).
    value = ((config or {}).get("weights") or {}).get(model)
    return value if isinstance(value, str) and value != "random" else None


def check_weights(config: dict | None = None) -> list[CheckResult]:
    results = []
    for model in DOCTOR_MODELS:
        spec = weights.MODELS[model]
        hit = weights.find_checkpoint(model, _config_checkpoint(config, model))
        if hit is not None:
            problem = weights.verify_checkpoint(Path(hit))
            if problem:
                results.append(CheckResult(f"weights:{model}", False, f"{hit}: {problem}",
                                           f"delete it and fetch it again: {weights.fetch_command(model)}"))
            else:
                results.append(CheckResult(f"weights:{model}", True, f"{hit} (archive checksums verified)"))
            continue
        detail = f"{spec.filename} missing (optional backend; sim backends need none)"
        if spec.gated:
            detail += f"; {spec.hf_repo} is gated"
        results.append(CheckResult(f"weights:{model}", None, detail, weights.fetch_command(model)))
    return results


def check_gpu() -> CheckResult:
    # Information only: everything runs on the CPU, a GPU just makes SAM 3 possible.
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return CheckResult("gpu", True, "CUDA: " + ", ".join(names))
        return CheckResult("gpu", True, "no CUDA device (CPU only; SAM 3 backend unavailable)")
    except Exception as exc:
        return CheckResult("gpu", None, f"could not query torch.cuda: {exc}")


# --- entry points ---------------------------------------------------------------------


def run_checks(config: dict | None = None) -> list[CheckResult]:
    project_dir = (config or {}).get("project_dir", ".")
    return [
        check_python(),
        *check_packages(),
        check_mujoco_gl(),
        check_sapien_render(),
        check_disk(project_dir),
        *check_weights(config),
        check_gpu(),
    ]


def _print_table(results: list[CheckResult]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for r in results:
            print(f"{r.status:5} {r.name:28} {r.detail}")
    else:
        style = {True: "green", None: "yellow", False: "bold red"}
        table = Table(title="kubm doctor")
        for col in ("status", "check", "detail"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(f"[{style[r.ok]}]{r.status}[/]", r.name, r.detail)
        Console().print(table)
    # Fixes are printed unwrapped below the table so the commands stay copy-pasteable.
    fixes = [r for r in results if r.fix and r.ok is not True]
    if fixes:
        print("\nFixes:")
        for r in fixes:
            print(f"  [{r.status}] {r.name}: {r.fix}")


def main(config: dict | None = None) -> int:
    """Print the checks; exit code 1 when any required check failed (warnings pass)."""
    results = run_checks(config)
    _print_table(results)
    failed = [r.name for r in results if r.ok is False]
    if failed:
        print(f"doctor: {len(failed)} failed: {', '.join(failed)}")
        return 1
    warned = sum(r.ok is None for r in results)
    print(f"doctor: all required checks pass ({warned} warning(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
