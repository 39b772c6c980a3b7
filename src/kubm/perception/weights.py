"""Find model checkpoints on disk; never download.

No wheel ships SAM 2, SAM 3 or CoTracker weights, so every backend asks this module
where its file is. Order (docs/design.md, "Perception"): config path, environment variable, weights dir
(``$KUBM_WEIGHTS_DIR`` or ``~/.cache/kubm/weights``), Hugging Face cache (local only),
torch hub cache. When nothing is found the error lists every place looked at and the
command that fetches the file, so the fix is one copy-paste away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from kubm.errors import ModelError, PerceptionError

__all__ = [
    "MODELS",
    "CheckpointNotFound",
    "ModelSpec",
    "fetch_command",
    "find_checkpoint",
    "resolve_checkpoint",
    "weights_dir",
]


@dataclass(frozen=True)
class ModelSpec:
    filename: str
    env_var: str
    hf_repo: str
    url: str | None = None  # direct download; otherwise fetched with huggingface-cli
    gated: bool = False  # Hugging Face repo needs an accepted licence and a login
    licence: str = ""


def _sam2(size: str) -> ModelSpec:
    return ModelSpec(
        filename=f"sam2.1_hiera_{size}.pt",
        env_var="KUBM_SAM2_CKPT",
        hf_repo=f"facebook/sam2.1-hiera-{size.replace('_', '-')}",
        licence="Apache-2.0",
    )


_COTRACKER = "https://huggingface.co/facebook/cotracker3/resolve/main/"

# Known checkpoints. Variants of one family share an env var; if it names a directory,
# the variant's filename is looked up inside it.
MODELS: dict[str, ModelSpec] = {
    "sam2.1_hiera_tiny": _sam2("tiny"),
    "sam2.1_hiera_small": _sam2("small"),
    "sam2.1_hiera_base_plus": _sam2("base_plus"),
    "sam2.1_hiera_large": _sam2("large"),
    "sam3": ModelSpec(
        filename="sam3.pt",
        env_var="KUBM_SAM3_CKPT",
        hf_repo="facebook/sam3",
        gated=True,
        licence="SAM License",
    ),
    "cotracker3_offline": ModelSpec(
        filename="scaled_offline.pth",
        env_var="KUBM_COTRACKER_CKPT",
        hf_repo="facebook/cotracker3",
        url=_COTRACKER + "scaled_offline.pth",
        licence="CC-BY-NC-4.0",
    ),
    "cotracker3_online": ModelSpec(
        filename="scaled_online.pth",
        env_var="KUBM_COTRACKER_CKPT",
        hf_repo="facebook/cotracker3",
        url=_COTRACKER + "scaled_online.pth",
        licence="CC-BY-NC-4.0",
    ),
}

# Short names used in configs.
ALIASES = {
    "sam2": "sam2.1_hiera_tiny",
    "cotracker3": "cotracker3_offline",
    "cotracker": "cotracker3_offline",
}


class CheckpointNotFound(PerceptionError, FileNotFoundError):
    """No checkpoint in any of the places looked at; the message says how to fetch it."""


def _spec(model: str) -> tuple[str, ModelSpec]:
    name = ALIASES.get(model, model)
    try:
        return name, MODELS[name]
    except KeyError:
        known = ", ".join(sorted([*MODELS, *ALIASES]))
        raise KeyError(f"unknown model {model!r}; known: {known}") from None


def weights_dir() -> Path:
    return Path(os.environ.get("KUBM_WEIGHTS_DIR") or "~/.cache/kubm/weights").expanduser()


def _hf_hub_cache() -> Path:
    # Read the env each call (huggingface_hub freezes it at import) so tests can redirect it.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _torch_hub_checkpoints() -> Path:
    # Same rule as torch.hub.get_dir(), without importing torch.
    if os.environ.get("TORCH_HOME"):
        root = Path(os.environ["TORCH_HOME"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "torch"
    return root / "hub" / "checkpoints"


def _from_hf_cache(spec: ModelSpec, cache: Path) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        # Same layout huggingface_hub uses: models--org--name/snapshots/<rev>/file.
        repo = cache / ("models--" + spec.hf_repo.replace("/", "--"))
        hits = sorted((repo / "snapshots").glob(f"*/{spec.filename}"))
        return hits[-1] if hits else None
    hit = try_to_load_from_cache(spec.hf_repo, spec.filename, cache_dir=cache)
    return Path(hit) if isinstance(hit, str) else None


def fetch_command(model: str) -> str:
    """Shell command that puts the checkpoint where the resolver looks (the weights dir)."""
    _, spec = _spec(model)
    dest = weights_dir()
    if spec.url:
        cmd = f"wget {spec.url} -P {dest}"
    else:
        cmd = f"huggingface-cli download {spec.hf_repo} {spec.filename} --local-dir {dest}"
    if spec.gated:
        cmd = (
            f"{spec.hf_repo} is gated: request access at https://huggingface.co/{spec.hf_repo}, "
            f"then `huggingface-cli login`, then `{cmd}`"
        )
    return cmd


def _explicit(path: str | os.PathLike, filename: str) -> Path:
    p = Path(path).expanduser()
    return p / filename if p.is_dir() else p


def _search(model: str, config_path: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """Walk the resolver order; return the hit (or None) and a line per place checked."""
    name, spec = _spec(model)
    checked: list[str] = []

    # Explicit settings (config, env var) are not skipped when wrong: silently falling
    # through to another file would hide a typo.
    if config_path:
        p = _explicit(config_path, spec.filename)
        checked.append(f"config path: {p}")
        if p.is_file():
            return p, checked
        return None, checked + ["(a configured path that does not exist is an error)"]
    env = os.environ.get(spec.env_var)
    if env:
        p = _explicit(env, spec.filename)
        checked.append(f"${spec.env_var}: {p}")
        if p.is_file():
            return p, checked
        return None, checked + [f"(${spec.env_var} is set but names no file)"]
    checked.append(f"${spec.env_var}: not set")

    p = weights_dir() / spec.filename
    checked.append(f"weights dir: {p}")
    if p.is_file():
        return p, checked

    cache = _hf_hub_cache()
    checked.append(f"Hugging Face cache: {cache} ({spec.hf_repo}/{spec.filename})")
    hit = _from_hf_cache(spec, cache)
    if hit is not None and hit.is_file():
        return hit, checked

    p = _torch_hub_checkpoints() / spec.filename
    checked.append(f"torch hub cache: {p}")
    if p.is_file():
        return p, checked
    return None, checked


def find_checkpoint(model: str, config_path: str | os.PathLike | None = None) -> Path | None:
    """The checkpoint's path, or None when it is not on this machine."""
    return _search(model, config_path)[0]


def resolve_checkpoint(model: str, config_path: str | os.PathLike | None = None) -> Path:
    """The checkpoint's path; raises CheckpointNotFound listing every place checked."""
    hit, checked = _search(model, config_path)
    if hit is not None:
        return hit
    name, spec = _spec(model)
    lines = [f"checkpoint {spec.filename} for {name!r} not found. Checked:"]
    lines += [f"  - {c}" for c in checked]
    lines.append(f"Fetch it with: {fetch_command(name)}")
    if spec.gated:
        lines.append(f"(gated weights: {spec.hf_repo} needs an accepted licence and a login)")
    if spec.licence:
        lines.append(f"Licence: {spec.licence}")
    raise CheckpointNotFound("\n".join(lines))


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint reads back whole, else what is wrong. torch checkpoints are
    zip archives: every member's CRC is checked (an interrupted download fails here);
    safetensors files must hold every byte their header promises."""
    import json
    import zipfile

    try:
        if path.suffix == ".safetensors":
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            size = path.stat().st_size
            return None if size >= 8 + n + end else f"truncated: {size} bytes, header needs {8 + n + end}"
        if not zipfile.is_zipfile(path):
            return "not a complete torch checkpoint (no zip directory: truncated or not a checkpoint)"
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"damaged member {bad} (CRC mismatch)"
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {e})"


class CheckpointDamaged(ModelError):
    """A checkpoint exists but cannot be read whole (an interrupted download)."""


def raise_if_damaged(model: str, path, err: Exception) -> None:
    """Called when a backend fails to build from ``path``: a damaged file becomes an error
    naming it and the fetch command; otherwise the caller re-raises the original error."""
    if path is None:
        return
    problem = verify_checkpoint(Path(path))
    if problem:
        raise CheckpointDamaged(f"{path}: {problem}; delete it and fetch it again: {fetch_command(model)}") from err
