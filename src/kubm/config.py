"""Load, merge and validate the pipeline config; resolve one task's settings.

The schema (schemas/config.schema.yaml, also reached as workflow/schemas/) checks
types and fills defaults; the checks below catch what a schema cannot say
(overlapping seed ranges, demo counts beyond the seed budget, unknown tasks),
and every error names the offending key and the allowed values.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import math
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from kubm.errors import ConfigError

SPLITS = ("train", "test")
DEFAULT_CONFIG = Path("config/config.yaml")
# Methods a task may list (`methods:`) come from kubm.policies.registry (method_names()).
# Cheap ones run by default; config/study.yaml adds the rest.
DEFAULT_METHODS = ("kubm", "kodex", "regression")


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("kubm").joinpath("schemas/config.schema.yaml").read_text()


def schema() -> dict:
    """The config schema, with the method list of the registry wherever the YAML says
    ``x-kubm-methods`` (so a new method needs no schema edit)."""
    from kubm.policies.registry import method_names

    names = list(method_names())

    def fill(node):
        if isinstance(node, dict):
            if node.get("x-kubm-methods"):
                return {"enum": names}
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    sch = fill(yaml.safe_load(_schema_text()))
    fit = sch["properties"]["fit"]["properties"]
    for m in names:  # a method without schema keys: its config class checks them
        fit.setdefault(m, {"type": "object", "default": {}})
    return sch


def _is_integer(checker, x) -> bool:
    # JSON Schema counts 3.0 as an integer; Python's range() and array shapes do not
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(checker, x) -> bool:
    # NaN and ±inf pass every numeric bound (comparisons with NaN are false): refuse them here
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def deep_merge(base: dict, over: dict) -> dict:
    """Recursive dict merge, `over` wins; same semantics as Snakemake's --configfile."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(paths: Iterable[str | Path] = (DEFAULT_CONFIG,)) -> dict:
    """Read and merge config files in order, then validate."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        merged = deep_merge(merged, data)
    return validate(merged)


def _with_defaults(validator_cls):
    """A validator that fills `default` values, as Snakemake's validate() does."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    checker = validator_cls.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults}, type_checker=checker)


@functools.lru_cache(maxsize=1)
def _validator(methods: tuple[str, ...]):
    # cached per method list: a method registered at run time gets a schema that knows it
    return _with_defaults(jsonschema.Draft202012Validator)(schema())


def _did_you_mean(unknown: list, allowed: list[str]) -> str:
    """' (did you mean lr_K?)' for a typo of an allowed key: case slips and near misses."""
    lower = {a.lower(): a for a in allowed}
    hints = []
    for key in map(str, unknown):
        close = [lower[key.lower()]] if key.lower() in lower else difflib.get_close_matches(key, allowed, n=1)
        hints += [f"{key} -> {close[0]}"] if close else []
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _format_error(err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"config key {key}: unknown key(s) {extra}{_did_you_mean(extra, allowed)}; allowed keys: {allowed}"
    if err.validator == "enum":
        return f"config key {key}: {err.instance!r} is not allowed; allowed values: {err.validator_value}"
    if err.validator == "type":
        got = f"{type(err.instance).__name__} {err.instance!r}"
        if isinstance(err.instance, float) and not math.isfinite(err.instance):
            return f"config key {key}: expected a finite {err.validator_value}, got {err.instance!r}"
        if err.validator_value == "integer" and isinstance(err.instance, float):
            return f"config key {key}: expected an integer, got {got}; write it without a decimal point"
        return f"config key {key}: expected {err.validator_value}, got {got}"
    return f"config key {key}: {err.message}"


def _renamed(method: str) -> dict[str, str]:
    """Keys of fit.<method> renamed since results were first published: old → new."""
    from kubm.policies.registry import METHODS, config_class

    return dict(getattr(config_class(method), "RENAMED", {})) if method in METHODS else {}


def _hash_names(method: str, settings: dict) -> dict:
    """``settings`` under the key names the stage hashes were first computed with, so a rename
    that keeps a setting's meaning keeps every hash (and every result) valid."""
    back = {new: old for old, new in _renamed(method).items()}
    return {back.get(k, k): v for k, v in settings.items()} if back else settings


def _check_renamed(config: dict) -> None:
    """An old key name gets a message that names the new one (the schema would only say unknown)."""
    def mapping(x) -> dict:  # a malformed level is the schema's to report, not this check's
        return x if isinstance(x, dict) else {}

    fit = mapping(config.get("fit"))
    blocks = [(f"fit.{m}", fit.get(m)) for m in method_names()]
    for suite, scfg in mapping(config.get("suites")).items():
        for task, tcfg in mapping(mapping(scfg).get("tasks")).items():
            for m, over in mapping(mapping(tcfg).get("method_params")).items():
                blocks.append((f"suites.{suite}.tasks.{task}.method_params.{m}", over))
    for where, block in blocks:
        if not isinstance(block, dict):
            continue
        method = where.rsplit(".", 1)[1]
        for old, new in _renamed(method).items() if method in method_names() else ():
            if old in block:
                raise ConfigError(f"config key {where}.{old} was renamed {where}.{new} (same meaning); "
                                  f"rename it in your config file")


def method_names() -> tuple[str, ...]:
    """Every method a task may list (the registry's)."""
    from kubm.policies.registry import method_names as names

    return names()


def _method_keys(sch: dict, method: str) -> set[str]:
    """The keys fit.<method> may hold: the schema's, else the config class's fields."""
    props = sch["properties"]["fit"]["properties"].get(method, {}).get("properties")
    if props:
        return set(props)
    import dataclasses

    from kubm.policies.registry import config_class

    return {f.name for f in dataclasses.fields(config_class(method))}


def validate(config: dict) -> dict:
    """Schema check with defaults filled in, then the cross-key checks. Returns a new dict."""
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    config = copy.deepcopy(config)
    _check_renamed(config)
    sch = schema()
    errors = sorted(_validator(method_names()).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_format_error(e) for e in errors))
    fit_keys = {m: _method_keys(sch, m) for m in method_names()}
    for suite, task in all_tasks(config):
        t = resolve_task(config, suite, task)  # raises on missing or inconsistent settings
        for method, over in (t.settings.get("method_params") or {}).items():
            unknown = sorted(set(over) - fit_keys[method])
            if unknown:
                hint = _did_you_mean(unknown, sorted(fit_keys[method]))
                raise ConfigError(f"suites.{suite}.tasks.{task}.method_params.{method}: unknown key(s) {unknown}{hint}; "
                                  f"allowed keys (those of fit.{method}): {sorted(fit_keys[method])}")
        _check_expert(t)
        for method in task_methods(config, suite, task):
            _check_method_config(config, t, method)
    for target in config.get("targets", []):
        split_task_id(config, target)
    return config


def _check_expert(t: TaskConfig) -> None:
    """The expert must exist and drive this task's simulator (checked now, not at collect)."""
    from kubm.experts.registry import EXPERT_SIMULATORS

    name = t.settings["expert"]["name"]
    where = f"suites.{t.suite}.tasks.{t.task}.expert.name"
    if name not in EXPERT_SIMULATORS:
        raise ConfigError(f"{where}: unknown expert {name!r}; known experts: {sorted(EXPERT_SIMULATORS)}")
    if t.simulator not in EXPERT_SIMULATORS[name]:
        fits = sorted(n for n, sims in EXPERT_SIMULATORS.items() if t.simulator in sims)
        raise ConfigError(f"{where}: expert {name!r} drives {sorted(EXPERT_SIMULATORS[name])}, not this suite's "
                          f"simulator {t.simulator!r}; experts for {t.simulator}: {fits}")


def _check_method_config(config: dict, t: TaskConfig, method: str) -> None:
    """Each method's settings (fit.<method> plus the task's method_params) must build that
    method's typed config: constraints a schema cannot say (a Diffusion horizon the U-Net
    cannot halve, n_action_steps beyond the chunk) fail here, not when the fit starts."""
    from kubm.policies.registry import config_class

    settings = method_config(config, t.suite, t.task, method)
    try:
        config_class(method).from_dict(settings)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"fit.{method} (with suites.{t.suite}.tasks.{t.task}.method_params.{method}): {err}") from err


def all_tasks(config: dict) -> list[tuple[str, str]]:
    return [(s, t) for s, sc in config["suites"].items() for t in sc["tasks"]]


def split_task_id(config: dict, task_id: str) -> tuple[str, str]:
    """'adroit/relocate' -> ('adroit', 'relocate'), checked against the config."""
    suite, sep, task = task_id.partition("/")
    if not sep:
        raise ConfigError(f"task {task_id!r} must be written suite/task, e.g. adroit/relocate")
    if suite not in config["suites"]:
        raise ConfigError(f"unknown suite {suite!r}; configured suites: {sorted(config['suites'])}")
    tasks = config["suites"][suite]["tasks"]
    if task not in tasks:
        raise ConfigError(f"unknown task {task!r} in suite {suite!r}; configured tasks: {sorted(tasks)}")
    return suite, task


@dataclass(frozen=True)
class TaskConfig:
    """One task's settings: the suite's defaults overlaid with the task's own entry."""

    suite: str
    task: str
    simulator: str
    settings: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.task}"

    def seeds(self, split: str) -> range:
        rng = self.settings["seeds"][split]
        return range(rng["start"], rng["start"] + rng["count"])

    def n_demos(self, split: str) -> int:
        return self.settings["n_demos"][split]

    def hash(self) -> str:
        """Hash of everything that determines this task's data (recorded in store attrs)."""
        settings = dict(self.settings)
        # the perturbation changes no data, only the perturbed evaluation (whose own hash holds it)
        settings.pop("perturbation", None)
        if settings.get("method_params"):
            settings["method_params"] = {m: _hash_names(m, over) for m, over in settings["method_params"].items()}
        blob = json.dumps({"simulator": self.simulator, **settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


REQUIRED_TASK_KEYS = ("horizon", "camera", "n_demos", "seeds", "expert")


def resolve_task(config: dict, suite: str, task: str) -> TaskConfig:
    suite_cfg = config["suites"][suite]
    settings = deep_merge(suite_cfg.get("defaults", {}), suite_cfg["tasks"][task])
    where = f"suites.{suite}.tasks.{task}"
    missing = [k for k in REQUIRED_TASK_KEYS if k not in settings]
    if missing:
        raise ConfigError(f"{where}: missing {missing}; set them on the task or in suites.{suite}.defaults")
    for key in ("n_demos", "seeds"):
        lacking = [s for s in SPLITS if s not in settings[key]]
        if lacking:
            raise ConfigError(f"{where}.{key}: missing split(s) {lacking}; both 'train' and 'test' are required")
    ranges = {s: range(settings["seeds"][s]["start"], settings["seeds"][s]["start"] + settings["seeds"][s]["count"]) for s in SPLITS}
    a, b = ranges["train"], ranges["test"]
    if max(a.start, b.start) < min(a.stop, b.stop):
        raise ConfigError(
            f"{where}.seeds: train seeds [{a.start}, {a.stop}) and test seeds [{b.start}, {b.stop}) overlap; "
            "they must be disjoint so test episodes are never seen in training"
        )
    for split in SPLITS:
        if settings["n_demos"][split] > len(ranges[split]):
            raise ConfigError(
                f"{where}.n_demos.{split}={settings['n_demos'][split]} exceeds the seed budget "
                f"{where}.seeds.{split}.count={len(ranges[split])}; raise the count (failed episodes are discarded, "
                "so budget several times n_demos) or lower n_demos"
            )
    camera = settings["camera"]
    camera.setdefault("name", None)
    camera.setdefault("width", 128)
    camera.setdefault("height", 128)
    settings.setdefault("prompt", task)
    settings["expert"].setdefault("params", {})
    return TaskConfig(suite=suite, task=task, simulator=suite_cfg["simulator"], settings=settings)


# The task settings each stage reads: a change elsewhere must not rerun it.
STAGE_TASK_KEYS = {
    "collect": ("horizon", "camera", "n_demos", "seeds", "expert"),
    "segment": ("prompt",),
    "track": (),
    "train_ae": (),
    "encode": ("context",),
    "fit": (),
    "evaluate": ("horizon", "camera", "seeds", "context"),
    "evaluate_perturbed": ("horizon", "camera", "seeds", "context", "perturbation"),
}


OPTIONAL_STAGE_TASK_KEYS = {
    "collect": ("assets_dir", "instances", "visual_max_triangles"),
    "evaluate": ("assets_dir", "instances", "visual_max_triangles"),
    "evaluate_perturbed": ("assets_dir", "instances", "visual_max_triangles"),
}


# The top-level config sections each data stage reads (its rule's params hash them too).
STAGE_SECTIONS = {
    "collect": (),
    "segment": ("segment", "weights"),
    "track": ("track", "weights"),
    "train_ae": ("train_ae",),
    "encode": (),
}
# The data stages each data stage reads the outputs of (the DAG of one task, per split).
STAGE_INPUTS = {
    "collect": (),
    "segment": ("collect",),
    "track": ("collect", "segment"),
    "train_ae": ("track",),
    "encode": ("collect", "segment", "track", "train_ae"),
}


def lineage_hash(config: dict, task: TaskConfig, stage: str) -> str:
    """Hash of everything the output of ``stage`` depends on under ``config``: its own
    stage hash and, recursively, those of the stages it reads. A store records it when it is
    written; a reader compares it with the active config's, so data built under another
    config (a pulled smoke cache, a copied workspace) is never reused silently."""
    own = _task_stage_hash(task, stage, [config.get(s) for s in STAGE_SECTIONS[stage]])
    ups = [lineage_hash(config, task, u) for u in STAGE_INPUTS[stage]]
    return hashlib.sha256(json.dumps([stage, own, ups]).encode()).hexdigest()[:16]


def _task_stage_hash(t: TaskConfig, stage: str, section_values: list) -> str:
    keys = {k: t.settings.get(k) for k in STAGE_TASK_KEYS[stage]}
    # keys added later count only when set, so existing results keep their hashes
    keys.update({k: t.settings[k] for k in OPTIONAL_STAGE_TASK_KEYS.get(stage, ()) if t.settings.get(k) is not None})
    blob = json.dumps([t.simulator, keys, section_values], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_hash(config: dict, suite: str, task: str, stage: str, *sections: str) -> str:
    """Hash of what one stage reads: its slice of the task's settings plus top-level sections."""
    return _task_stage_hash(resolve_task(config, suite, task), stage, [config.get(s) for s in sections])


def task_methods(config: dict, suite: str, task: str) -> list[str]:
    """The methods fitted and evaluated for a task (its `methods`, else DEFAULT_METHODS)."""
    return list(resolve_task(config, suite, task).settings.get("methods") or DEFAULT_METHODS)


def method_seeds(config: dict, method: str) -> range:
    """Training seeds of one method: fit.n_seeds_by_method.<method>, else fit.n_seeds."""
    fit = config.get("fit", {})
    return range(int((fit.get("n_seeds_by_method") or {}).get(method, fit.get("n_seeds", 5))))


def method_config(config: dict, suite: str, task: str, method: str) -> dict:
    """fit.<method> with the task's `method_params.<method>` overrides on top."""
    if method not in method_names():
        raise ConfigError(f"unknown method {method!r}; valid methods: {list(method_names())}")
    over = (resolve_task(config, suite, task).settings.get("method_params") or {}).get(method, {})
    return deep_merge(config.get("fit", {}).get(method, {}), over)


def with_method_config(config: dict, suite: str, task: str, method: str) -> dict:
    """A copy of config whose fit.<method> is the task's effective setting (what fit reads)."""
    out = copy.deepcopy(config)
    out.setdefault("fit", {})[method] = method_config(config, suite, task, method)
    return out


def method_hash(config: dict, suite: str, task: str, method: str) -> str:
    """Hash of what one method's fit reads, so changing one method reruns only its nodes."""
    blob = json.dumps([resolve_task(config, suite, task).simulator, method,
                       _hash_names(method, method_config(config, suite, task, method))], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The sections an evaluation reads besides its method's settings.
EVAL_SECTIONS = ("evaluate", "segment", "track", "weights")
# The rules whose jobs read the config (each has a config_hash param in workflow/rules/).
PARAM_RULES = (*STAGE_SECTIONS, "fit", "evaluate_method", "evaluate_perturbed")


def rule_config_hash(config: dict, rule: str, suite: str, task: str, method: str | None = None) -> str:
    """Snakemake's params trigger of one job of ``rule`` (workflow/rules/common.smk): a hash
    of exactly what rule_config_keys names, so DVC's params and Snakemake's agree."""
    if rule in STAGE_SECTIONS:
        return stage_hash(config, suite, task, rule, *STAGE_SECTIONS[rule])
    if rule == "fit":
        return method_hash(config, suite, task, method)
    if rule == "evaluate_method":
        return stage_hash(config, suite, task, "evaluate", *EVAL_SECTIONS) + method_hash(config, suite, task, method)
    if rule == "evaluate_perturbed":  # every method's models at once
        every = hashlib.sha256("".join(method_hash(config, suite, task, m) for m in method_names()).encode())
        return stage_hash(config, suite, task, rule, *EVAL_SECTIONS, "perturbed") + every.hexdigest()[:16]
    raise ConfigError(f"rule {rule!r} reads no config settings")


def rule_config_keys(rule: str, suite: str, task: str, method: str | None = None) -> list[str]:
    """The dotted config keys one job of ``rule`` reads: DVC's params of its stage
    (kubm.dvc_stages). A test perturbs every key and checks that rule_config_hash changes
    exactly when a listed one does."""
    if rule == "fit":
        stage, sections, task_keys = "fit", [f"fit.{method}"], [f"method_params.{method}"]
    elif rule == "evaluate_method":
        stage, sections, task_keys = "evaluate", [*EVAL_SECTIONS, f"fit.{method}"], [f"method_params.{method}"]
    elif rule == "evaluate_perturbed":
        stage, sections = rule, [*EVAL_SECTIONS, "perturbed", *(f"fit.{m}" for m in method_names())]
        task_keys = [f"method_params.{m}" for m in method_names()]
    elif rule in STAGE_SECTIONS:
        stage, sections, task_keys = rule, list(STAGE_SECTIONS[rule]), []
    else:
        return []
    task_keys = [*STAGE_TASK_KEYS[stage], *OPTIONAL_STAGE_TASK_KEYS.get(stage, ()), *task_keys]
    where = (f"suites.{suite}.defaults", f"suites.{suite}.tasks.{task}")
    return [f"suites.{suite}.simulator", *(f"{w}.{k}" for w in where for k in task_keys), *sections]


def target_tasks(config: dict) -> list[tuple[str, str]]:
    targets = config.get("targets") or []
    if not targets:
        return all_tasks(config)
    return [split_task_id(config, t) for t in targets]
