"""What every method's typed config shares (LeRobot's ``configuration_*`` pattern): built
from the pipeline's ``fit.<method>`` dict with unknown keys refused, written back as a
dict into the model's config.json, and one way to report every invalid setting at once."""

from __future__ import annotations

import copy
import dataclasses
import functools
from importlib import resources
from typing import Any

import yaml

from kubm.errors import ConfigError

__all__ = ["PolicyConfig", "pipeline_defaults", "schema_defaults"]


class PolicyConfig:
    """Base of the ``@dataclass`` config classes; ``LABEL`` names the method in messages."""

    LABEL = "policy"
    RENAMED: dict[str, str] = {}  # keys renamed since models were first saved: old → new

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = {cls.RENAMED.get(k, k): v for k, v in d.items()}  # a model saved before a rename loads
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.LABEL} config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def raise_problems(self, problems: list[str]) -> None:
        """One ConfigError listing every problem found by ``__post_init__`` (none: no error)."""
        if problems:
            raise ConfigError(f"invalid {self.LABEL} config: " + "; ".join(problems))

    def check_schedule(self, problems: list[str]) -> None:
        """The checks shared by the learned methods' schedules."""
        budget = getattr(self, "time_budget_s", None)
        if budget is not None and budget <= 0:
            problems.append(f"time_budget_s={budget} must be > 0 or null")
        if hasattr(self, "val_demos") and (self.val_demos < 0 or self.val_every < 0):
            problems.append(f"val_demos={self.val_demos} and val_every={self.val_every} must be >= 0")


@functools.lru_cache(maxsize=1)
def _fit_schema() -> dict:
    """``fit.properties`` of the config schema, parsed once for every method's config class."""
    sch = yaml.safe_load(resources.files("kubm").joinpath("schemas/config.schema.yaml").read_text())
    return sch["properties"]["fit"]["properties"]


@functools.lru_cache(maxsize=None)
def schema_defaults(method: str) -> dict[str, Any]:
    """The defaults of ``fit.<method>.*`` in the config schema (the one place they are written)."""
    props = _fit_schema().get(method, {}).get("properties", {})
    return {k: p["default"] for k, p in props.items() if "default" in p}


def pipeline_defaults(method: str):
    """Class decorator, applied before ``@dataclass``: every annotated field that is a
    pipeline key ``fit.<method>.<name>`` and has no default in the class body gets the
    schema's default, so the schema is the only place a pipeline default is written."""

    def decorate(cls):
        defaults = schema_defaults(method)
        for name in cls.__dict__.get("__annotations__", {}):
            if name in defaults and name not in cls.__dict__:
                value = defaults[name]
                if isinstance(value, (list, dict)):
                    value = dataclasses.field(default_factory=functools.partial(copy.deepcopy, value))
                setattr(cls, name, value)
        return cls

    return decorate
