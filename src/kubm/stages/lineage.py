"""Data built under another config is never reused silently (docs/design.md, "Stage contracts").

Every data stage records in its output the lineage hash of the active config
(``kubm.config.lineage_hash``: its own settings and those of every stage upstream). Every
stage that reads such an output compares the recorded hash with the one the active config
gives and refuses a mismatch, naming both and the fix. This holds however the input got
there: a local run, a copied workspace, or `dvc pull` of another profile's cache followed by
`snakemake --touch`. (Snakemake cannot make this comparison itself: a pulled output has
no run metadata for its params trigger.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kubm.config import TaskConfig, lineage_hash
from kubm.errors import StageError

log = logging.getLogger(__name__)

__all__ = ["StaleInput", "check_lineage", "recorded_lineage"]


class StaleInput(StageError):
    """An input was built under another config than the active one."""


def recorded_lineage(path) -> str | None:
    """The lineage a stage output records: a store's attrs, or a model directory's config.json
    (the flow AE keeps it in ``meta``). None when it records none (or cannot be read)."""
    path = Path(path)
    for f in (path / "zarr.json", path / "config.json"):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        attrs = doc.get("attributes", doc)
        for where in (attrs, attrs.get("meta") or {}):
            if isinstance(where, dict) and where.get("lineage"):
                return str(where["lineage"])
    return None


def check_lineage(path, recorded: str | None, config: dict, task: TaskConfig, producer: str) -> None:
    """Refuse an input whose recorded lineage is not the active config's."""
    expected = lineage_hash(config, task, producer)
    if recorded is None:
        log.warning("%s records no lineage (written before lineage was recorded); cannot check that it "
                    "was built under the active config", path)
        return
    if recorded != expected:
        raise StaleInput(
            f"{path} was built under another config than the active one ({producer} lineage {recorded}; the "
            f"active config gives {expected}). It is stale, for example a cache pulled or copied from another "
            f"profile (such as config/smoke.yaml). Rebuild it under this config: delete {path} and rerun "
            f"`snakemake {path}` with the same --configfile, or `snakemake --forcerun {producer} <target>`")
