"""The on-disk form every policy shares: ``model.safetensors`` + ``config.json``.

Each method's ``save`` / ``load`` calls these, so the file names, the method/format checks
and their error messages are one piece of code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from kubm.errors import MissingInput, ModelError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ModelFileError(ModelError):
    """A saved model's file is unreadable (truncated, corrupt, not a model); the message
    names the file and how to rebuild it."""


def _rebuild_hint(directory) -> str:
    return (f"rebuild it: delete {directory} and rerun its fit (`snakemake {directory}` or `kubm fit`), "
            "or fetch it again with `dvc pull`")


def read_config(directory) -> dict:
    """A saved model's config.json as a dict; ModelFileError naming it when it is unreadable."""
    path = Path(directory) / CONFIG
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not valid JSON ({e}); {_rebuild_hint(directory)}") from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: expected a JSON object; {_rebuild_hint(directory)}")
    return meta


def _load_safetensors(w_path: Path, directory, loader):
    try:
        return loader(str(w_path))
    except Exception as e:  # safetensors raises its own error types for a truncated or corrupt file
        raise ModelFileError(f"{w_path}: cannot read the weights ({type(e).__name__}: {e}); "
                             f"the file is damaged or incomplete; {_rebuild_hint(directory)}") from e


def write_policy(directory, method: str, tensors: dict, config: dict) -> Path:
    """Write ``tensors`` (torch tensors, or numpy arrays stored as float64) and ``config``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    first = next(iter(tensors.values()), None)
    if hasattr(first, "detach"):  # a torch state dict
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    else:  # closed-form models: numpy arrays
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v, np.float64) for k, v in tensors.items()}
    save_file(tensors, str(directory / WEIGHTS), metadata={"method": method})
    (directory / CONFIG).write_text(json.dumps(config, indent=2, allow_nan=False))
    return directory


def read_policy(directory, method: str, fmt: int, label: str) -> tuple[Path, dict, Path]:
    """(directory, config.json as a dict, weights path) after checking both files exist and
    that the config names ``method`` and ``fmt``; ``label`` names the model in errors."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise MissingInput(f"{directory}: no {p.name}; not a saved {label} model "
                                    f"(run `kubm fit ... --method {method}`)")
    meta = read_config(directory)
    if meta.get("method") != method:
        raise ModelFileError(f"{directory}: config.json method is {meta.get('method')!r}, not {method!r}")
    if meta.get("format") != fmt:
        raise ModelFileError(f"{directory}: model format {meta.get('format')!r}, this code reads {fmt}")
    return directory, meta, w_path


def load_torch_state(model, w_path: Path, directory) -> None:
    """Strictly load a torch model's weights; a mismatch names the directory."""
    from safetensors.torch import load_file

    state = _load_safetensors(w_path, directory, load_file)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{directory}: weights do not match config.json ({e})") from e


def load_arrays(w_path: Path, directory, required) -> dict:
    """numpy arrays of a closed-form model, refusing a file that lacks any of ``required``."""
    from safetensors.numpy import load_file

    arrays = _load_safetensors(w_path, directory, load_file)
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ModelFileError(f"{directory}: {WEIGHTS} lacks {missing}")
    return arrays


def verify_model_dir(directory) -> str:
    """Read a saved model's config and every tensor (what `kubm doctor` / `kubm info` report);
    returns a one-line summary, raises ModelFileError naming the damaged file."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
    if not cfg_path.is_file():
        raise ModelFileError(f"{cfg_path}: missing; {_rebuild_hint(directory)}")
    meta = read_config(directory)
    if not w_path.is_file():
        raise ModelFileError(f"{w_path}: missing; {_rebuild_hint(directory)}")
    arrays = _load_safetensors(w_path, directory, load_file)
    n = sum(int(np.prod(a.shape)) for a in arrays.values())
    return f"{meta.get('method', '?')} model, {len(arrays)} tensors, {n} values"
