"""fit: train one method on a task's feature stores, for one training seed.

Output ``models/{suite}/{task}/{method}/seed{k}/``: the policy (``model.safetensors`` +
``config.json``, loaded by ``kubm.policies.load_policy``), the method's curves, plots and
``diagnostics.json`` (written by ``policies/<method>/fitting_<method>.fit``), and
``fit_summary.json``.

Everything is written into ``<out>.partial`` and renamed to ``<out>`` only at the end, so
a diverged or interrupted fit never leaves a model at ``<out>``.

The flow AE (``--ae``, loaded with ``kubm.features.flow_ae.FlowAE.load``) is only used to
decode latents to pixel points: for the replanning threshold and the px diagnostics. Tests
pass any object with ``decode(latents [T, d_flow]) -> points [T, P, 2]`` as ``ae=``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from kubm.config import TaskConfig, with_method_config
from kubm.errors import StageError
from kubm.policies.base import FitDiverged, FitInputs
from kubm.policies.features import load_features
from kubm.policies.registry import METHODS, config_class, fit_function
from kubm.stages.lineage import check_lineage, recorded_lineage
from kubm.storage.atomic import atomic_dir

log = logging.getLogger(__name__)

__all__ = ["FitDiverged", "FitError", "fit", "load_flow_ae"]


class FitError(StageError):
    """The fit stage cannot run on its inputs (unknown method, mismatched stores, no AE)."""


def load_flow_ae(ae_dir):
    try:
        from kubm.features.flow_ae import FlowAE
    except ImportError as e:
        raise FitError(f"cannot load the flow autoencoder: kubm.features.flow_ae is not available ({e}); "
                       "it comes with the train_ae stage") from e
    try:
        return FlowAE.load(ae_dir)
    except Exception as e:  # whatever the AE's loader raises, say which directory and what to do
        raise FitError(f"{ae_dir}: cannot load the flow autoencoder ({type(e).__name__}: {e}); "
                       "run `kubm train-ae` for this task first") from e


def _check_inputs(task: TaskConfig, train, test) -> None:
    for fs in (train, test):
        if fs.task_id is not None and fs.task_id != task.id:
            raise FitError(f"{fs.path}: features of task {fs.task_id}, but fitting {task.id}")
    if train.dims() != test.dims():
        raise FitError(f"train features {train.dims()} and test features {test.dims()} differ in dims")
    a, b = (train.attrs.get("ae") or {}).get("sha256"), (test.attrs.get("ae") or {}).get("sha256")
    if a and b and a != b:
        raise FitError(f"train and test features were encoded with different flow AEs ({a[:12]}… vs {b[:12]}…)")


def fit(task: TaskConfig, config: dict, method: str, seed: int, train: Path, test: Path, ae_dir: Path | None,
        out_dir: Path, *, threads: int = 1, progress: bool = True, ae=None, device: str = "auto") -> dict:
    """Fit ``method`` for one training seed; returns a summary dict (also in fit_summary.json).

    ``ae`` overrides loading the flow AE from ``ae_dir`` (any object with ``decode``); with
    neither, fit fails (FitError). Raises FitDiverged (seed, iteration) with nothing written.
    """
    if method not in METHODS:
        raise FitError(f"unknown method {method!r}; methods with a fit: {sorted(METHODS)}")
    # fit.<method> with the task's method_params overrides (per-task chunk sizes, horizons)
    config = with_method_config(config, task.suite, task.task, method)
    cfg = config_class(method).from_dict(config["fit"].get(method) or {})
    torch.set_num_threads(max(1, int(threads)))
    out_dir = Path(out_dir)
    train_fs, test_fs = load_features(train), load_features(test)
    _check_inputs(task, train_fs, test_fs)
    for path, fs in ((train, train_fs), (test, test_fs)):
        check_lineage(path, fs.attrs.get("lineage"), config, task, "encode")
    if ae_dir is not None:
        check_lineage(ae_dir, recorded_lineage(ae_dir), config, task, "train_ae")
    if ae is None:
        if ae_dir is None:
            raise FitError("fit needs the flow autoencoder (--ae) to calibrate the replanning threshold")
        from kubm.features.flow_ae import ae_mismatch

        mismatch = ae_mismatch(ae_dir, train_fs.attrs, train_fs.path)
        if mismatch:
            raise FitError(mismatch)
        ae = load_flow_ae(ae_dir)
    inputs = FitInputs(task_id=task.id, config_hash=task.hash(), seed=int(seed), train=train_fs, test=test_fs,
                       ae=ae, progress=progress, device=device)
    with atomic_dir(out_dir) as tmp:
        summary = fit_function(method)(cfg, inputs, tmp)
        summary.setdefault("method", method)
        summary["fit_config"] = config["fit"].get(method)
        # the result depends on it at float level (reduction order), so it is part of the record
        summary["torch_threads"] = torch.get_num_threads()
        (tmp / "fit_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["out"] = str(out_dir)
    return summary
