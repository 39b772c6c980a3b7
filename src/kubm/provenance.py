"""What made an artifact: package versions and git revision, recorded in store attrs."""

from __future__ import annotations

import subprocess
from importlib import metadata

TRACKED_PACKAGES = (
    "kubm", "numpy", "torch", "mujoco", "gymnasium", "gymnasium-robotics",
    "sapien", "zarr", "numcodecs", "snakemake", "dvc",
)


def package_versions(packages=TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() or None if rev.returncode == 0 else None
