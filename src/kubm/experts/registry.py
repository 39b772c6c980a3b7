"""Expert lookup by name (the `expert` field of a task's config entry)."""

from __future__ import annotations

from kubm.experts.base import Expert


def _relocate(params):
    from kubm.experts.adroit_relocate import AdroitRelocateExpert

    return AdroitRelocateExpert(params)


def _door(params):
    from kubm.experts.adroit_door import AdroitDoorExpert

    return AdroitDoorExpert(params)


def _dexart_bucket(params):
    from kubm.sim.dexart.experts import DexArtBucketExpert  # imports SAPIEN

    return DexArtBucketExpert(params)


EXPERTS = {"adroit_relocate": _relocate, "adroit_door": _door, "dexart_bucket": _dexart_bucket}


def make_expert(name: str, params: dict | None = None) -> Expert:
    if name not in EXPERTS:
        raise ValueError(f"unknown expert {name!r}; known: {', '.join(sorted(EXPERTS))}")
    return EXPERTS[name](params)
