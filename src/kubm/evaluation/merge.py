"""A task's eval.json from its per-method documents (``results/{suite}/{task}/methods/*.json``).

Each method is evaluated by its own DAG node, so adding a method reruns only that node and
this cheap merge. The merge refuses documents that were not made under one protocol (test
seeds, horizon, replanning, perception backends): their numbers would not be comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from kubm.evaluation.report import EvalDocumentError, read_documents, validate_eval, write_eval
from kubm.errors import DataError

__all__ = ["MergeError", "merge_eval_docs", "merge_eval_files"]

# Protocol keys that must agree; "features"/"flow_ae" paths and prose may differ in spelling.
PROTOCOL_KEYS = ("test_seeds", "episodes", "horizon", "success", "replan", "min_replan_interval",
                 "segment_backend", "track_backend", "n_points")


class MergeError(DataError):
    """Per-method documents that cannot be merged (other task, other protocol, duplicate method)."""


def _rebase(paths: Sequence[str], src_dir: Path, dst_dir: Path) -> list[str]:
    """Artifact paths relative to ``src_dir`` re-expressed relative to ``dst_dir``."""
    return [Path(os.path.relpath(src_dir / p, dst_dir)).as_posix() for p in paths]


def merge_eval_docs(docs: Sequence[tuple[Path, dict]], out: Path, *, suite: str, task: str,
                    order: Sequence[str] | None = None) -> dict:
    """Merge (path, document) pairs into one eval.json document for ``out`` (not written)."""
    if not docs:
        raise MergeError("nothing to merge: no per-method eval documents given")
    out_dir = Path(out).parent
    first_path, first = docs[0]
    methods, videos, plots, hashes = {}, [], [], []
    for path, doc in docs:
        try:
            validate_eval(doc)
        except EvalDocumentError as e:
            raise MergeError(f"{path}: {e}") from e
        if (doc["suite"], doc["task"]) != (suite, task):
            raise MergeError(f"{path} evaluates {doc['suite']}/{doc['task']}, not {suite}/{task}")
        for key in PROTOCOL_KEYS:
            if doc["protocol"].get(key) != first["protocol"].get(key):
                raise MergeError(f"{path} and {first_path} were evaluated under different protocols "
                                 f"(protocol.{key}: {doc['protocol'].get(key)!r} vs {first['protocol'].get(key)!r}); "
                                 "re-run the evaluate_method rule for the stale one")
        for name, entry in doc["methods"].items():
            if name in methods:
                raise MergeError(f"method {name!r} appears in more than one input ({path})")
            methods[name] = entry
        src = Path(path).parent
        videos += _rebase(doc["artifacts"]["videos"], src, out_dir)
        plots += _rebase(doc["artifacts"]["plots"], src, out_dir)
        hashes.append(doc["config_hash"])
    if order:
        missing = [m for m in order if m not in methods]
        if missing:
            raise MergeError(f"the config lists methods {missing} for {suite}/{task} but no input evaluates them")
        methods = {m: methods[m] for m in order} | {m: v for m, v in methods.items() if m not in order}
    protocol = dict(first["protocol"])
    protocol.pop("features", None)
    protocol["paths"] = "artifacts are relative to this file's folder"
    protocol["method_documents"] = _rebase([Path(p).name for p, _ in docs], Path(first_path).parent, out_dir)
    return {
        "suite": suite,
        "task": task,
        "protocol": protocol,
        "methods": methods,
        "artifacts": {"videos": videos, "plots": plots},
        "versions": first["versions"],
        "config_hash": hashlib.sha256(json.dumps(hashes).encode()).hexdigest()[:16],
        "git_revision": first.get("git_revision"),
    }


def merge_eval_files(inputs: Sequence[Path], out: Path, *, suite: str, task: str,
                     order: Sequence[str] | None = None) -> dict:
    docs = read_documents(inputs, error=MergeError,
                          missing="{p} does not exist; run `snakemake {p}` (the evaluate_method rule) first",
                          corrupt="{p}: not valid JSON ({e}); delete it and re-run its evaluate_method rule")
    doc = merge_eval_docs(docs, out, suite=suite, task=task, order=order)
    write_eval(doc, Path(out))
    return doc
