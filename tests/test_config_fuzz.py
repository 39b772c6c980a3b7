"""Config validation ends only two ways: a valid config, or a ConfigError naming the key.

Hypothesis mutates the default config at random (drop keys, change types, add keys of any
type, NaN / ±inf / huge / negative / float-for-int numbers, nested wrong types) and feeds
each mutation to the loader and to everything the DAG computes from a config."""

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubm import config as kcfg

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "config/config.yaml").read_text())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, 1, -1, 2**63, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 0.5, -0.0, 1e308]),
    st.text(max_size=12), st.sampled_from(["kubm", "sim", "auto", "adroit/relocate", "", "mppi"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def _paths(node, prefix=()):
    """Every (container path, key) in the config tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix, k
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix, i
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_configs(draw):
    cfg = copy.deepcopy(RAW)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(cfg))
        if not paths:
            break
        parent_path, key = draw(st.sampled_from(paths))
        parent = _get(cfg, parent_path)
        old = parent[key]
        kind = draw(st.sampled_from(["drop", "replace", "add", "float_for_int", "negate", "nan", "wrap"]))
        if kind == "drop":
            del parent[key]
        elif kind == "replace":
            parent[key] = draw(values)
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif kind == "float_for_int" and isinstance(old, int) and not isinstance(old, bool):
            parent[key] = float(old)
        elif kind == "negate" and isinstance(old, (int, float)) and not isinstance(old, bool):
            parent[key] = -old - 1
        elif kind == "nan" and isinstance(old, (int, float)) and not isinstance(old, bool):
            parent[key] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e300]))
        elif kind == "wrap":
            parent[key] = draw(st.sampled_from([[old], {"x": old}, str(old)]))
    return cfg


def consume(config: dict) -> None:
    """What the Snakefile and the DVC generator compute from a validated config."""
    for suite, task in kcfg.target_tasks(config):
        t = kcfg.resolve_task(config, suite, task)
        t.hash()
        list(t.seeds("train")), list(t.seeds("test"))
        for stage in kcfg.STAGE_TASK_KEYS:
            kcfg.stage_hash(config, suite, task, stage, "evaluate")
        for method in kcfg.task_methods(config, suite, task):
            kcfg.method_hash(config, suite, task, method)
            list(kcfg.method_seeds(config, method))
        for rule in kcfg.PARAM_RULES:
            for method in kcfg.task_methods(config, suite, task):
                kcfg.rule_config_keys(rule, suite, task, method)
                kcfg.rule_config_hash(config, rule, suite, task, method)


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(mutated_configs())
def test_loader_raises_only_config_errors(cfg):
    try:
        config = kcfg.validate(cfg)
    except kcfg.ConfigError as err:
        assert str(err).strip()
        return
    consume(config)


def _exception_chain(err):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


@pytest.mark.slow
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(mutated_configs())
def test_snakefile_dag_building_fails_only_with_a_config_message(tmp_path_factory, cfg):
    """Snakemake's own DAG building on a mutated config (through its API, in process: the
    subprocess `snakemake -n` cost 7 s a call, mostly start-up): it plans every job, or it
    stops with a WorkflowError raised from the config check. Any other exception anywhere in
    the chain is what the CLI would print as a Python traceback."""
    from snakemake.exceptions import WorkflowError

    from kubm.dvc_stages import workflow_jobs

    path = tmp_path_factory.mktemp("fuzz") / "mutated.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        workflow_jobs(ROOT, [str(path)])
    except WorkflowError as err:
        chain = list(_exception_chain(err))
        assert all(isinstance(e, (WorkflowError, kcfg.ConfigError)) for e in chain), chain
        assert "config" in str(err).lower(), str(err)


def test_snakemake_cli_prints_the_config_error_without_a_traceback(tmp_path):
    """The CLI end of the in-process check above, on the case the fuzzer first found."""
    import subprocess
    import sys

    cfg = copy.deepcopy(RAW)
    cfg["suites"]["adroit"]["defaults"]["seeds"]["train"]["start"] = 0.0
    path = tmp_path / "float_seed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--quiet", "rules", "--cores", "1",
                           "--configfile", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert "seeds.train.start" in out and "without a decimal point" in out, out[-3000:]
