"""config/README.md documents every key with its default; the defaults are written once, in
the config schema (the method dataclasses take theirs from it). These tests fail when the
README's tables, the schema, the dataclasses or config/config.yaml drift apart."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from kubm.config import schema
from kubm.policies.registry import config_class, method_names

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^## `([\w.]+)`")


def _value(text: str):
    v = yaml.safe_load(text)
    if isinstance(v, str):  # YAML reads 1e-3 as a string
        try:
            return float(v)
        except ValueError:
            return v
    return v


def readme_tables() -> dict[str, dict[str, object]]:
    """section path (e.g. "fit.kubm") → {key: default as documented} (rows with one default per key)."""
    out: dict[str, dict] = {}
    section = None
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        m = SECTION.match(line)
        if m:
            section = m.group(1)
            out[section] = {}
            continue
        if line.startswith("## "):
            section = None
        if section is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        keys = re.findall(r"`([\w.]+)`", cells[0])
        # `opencv_lk.win`, `.levels`: a leading dot continues the first key's prefix
        keys = [keys[0].rsplit(".", 1)[0] + k if k.startswith(".") else k for k in keys]
        defaults = re.findall(r"`([^`]*)`", cells[2])
        if len(defaults) == 1:  # one default for every key of the row
            defaults = defaults * len(keys)
        if len(keys) == len(defaults):
            out[section].update({k: _value(d) for k, d in zip(keys, defaults)})
    return out


def _schema_node(path: str) -> dict:
    node = schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node


def _defaults(node: dict, prefix: str = "") -> dict:
    """Leaf defaults of a schema object, dotted keys for nested objects without their own table."""
    out = {}
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and sub.get("properties"):
            out.update(_defaults(sub, f"{prefix}{key}."))
        elif "default" in sub:
            out[f"{prefix}{key}"] = sub["default"]
    return out


@pytest.mark.parametrize("section", ["fit.kubm", "fit.kodex", "fit.regression", "fit.diffusion", "fit.act",
                                     "train_ae", "segment", "track", "evaluate"])
def test_readme_table_matches_the_schema(section):
    _check_section(section, readme_tables())


def _check_section(section: str, tables: dict) -> None:
    documented = tables.get(section)
    assert documented, f"config/README.md has no table for `{section}`"
    schema_defaults = _defaults(_schema_node(section))
    unknown = sorted(set(documented) - set(schema_defaults) - {k for k in documented if documented[k] is None})
    assert not unknown, f"config/README.md `{section}` documents keys the schema does not have: {unknown}"
    missing = sorted(set(schema_defaults) - set(documented))
    assert not missing, f"config/README.md `{section}` does not document: {missing}"
    wrong = {k: (documented[k], schema_defaults[k]) for k in documented
             if k in schema_defaults and documented[k] != schema_defaults[k]}
    assert not wrong, f"config/README.md `{section}` defaults (README, schema) differ: {wrong}"


@pytest.mark.parametrize("method", method_names())
def test_method_dataclass_and_default_config_take_the_schema_defaults(method):
    defaults = _defaults(_schema_node(f"fit.{method}"))
    built = config_class(method)()
    assert {k: getattr(built, k) for k in defaults} == defaults
    written = (yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["fit"].get(method)) or {}
    assert {k: v for k, v in written.items() if defaults.get(k) != v} == {}, \
        "config/config.yaml sets a fit default that differs from the schema's"
    fields = {f.name for f in dataclasses.fields(config_class(method))}
    assert set(defaults) <= fields


def test_the_drift_check_can_fail():
    tables = readme_tables()
    tables["fit.kubm"]["window_steps"] = 41
    with pytest.raises(AssertionError, match="window_steps"):
        _check_section("fit.kubm", tables)
