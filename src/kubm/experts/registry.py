"""Expert lookup by name (the `expert` field of a task's config entry)."""

from __future__ import annotations

from kubm.errors import ConfigError
from kubm.experts.base import Expert


def _relocate(params):
    from kubm.experts.adroit_relocate import AdroitRelocateExpert

    return AdroitRelocateExpert(params)


def _door(params):
    from kubm.experts.adroit_door import AdroitDoorExpert

    return AdroitDoorExpert(params)


def _dexart_bucket(params):
    from kubm.experts.dexart import DexArtBucketExpert  # imports SAPIEN

    return DexArtBucketExpert(params)


def _dexart(cls_name: str):
    def make(params):
        from kubm.experts import dexart as experts  # imports SAPIEN

        return getattr(experts, cls_name)(params)

    return make


def _mppi(params):
    from kubm.experts.mppi import MPPIExpert  # the task's cost is chosen from the env at reset

    return MPPIExpert(params)


EXPERTS = {
    "adroit_relocate": _relocate,
    "adroit_door": _door,
    "dexart_bucket": _dexart_bucket,
    "dexart_faucet": _dexart("DexArtFaucetExpert"),
    "dexart_laptop": _dexart("DexArtLaptopExpert"),
    "dexart_toilet": _dexart("DexArtToiletExpert"),
    "mppi": _mppi,
}


# The simulator each expert drives (the config check refuses an expert on another suite).
EXPERT_SIMULATORS = {"adroit_relocate": ("mujoco",), "adroit_door": ("mujoco",), "mppi": ("mujoco",),
                     "dexart_bucket": ("sapien",), "dexart_faucet": ("sapien",), "dexart_laptop": ("sapien",),
                     "dexart_toilet": ("sapien",)}
assert set(EXPERT_SIMULATORS) == set(EXPERTS)


def make_expert(name: str, params: dict | None = None) -> Expert:
    if name not in EXPERTS:
        raise ConfigError(f"unknown expert {name!r}; known: {', '.join(sorted(EXPERTS))}")
    return EXPERTS[name](params)
