import copy
import json
from pathlib import Path

import pytest
import yaml

from kubm.config import DEFAULT_CONFIG, ConfigError, load_config, resolve_task, split_task_id, target_tasks, validate


@pytest.fixture
def base(root):
    return yaml.safe_load((root / "config/config.yaml").read_text())


def test_default_config_lists_both_suites(root):
    cfg = load_config([root / "config/config.yaml"])
    assert set(cfg["suites"]["adroit"]["tasks"]) == {"door", "hammer", "pen", "relocate"}
    assert set(cfg["suites"]["dexart"]["tasks"]) == {"bucket", "faucet", "laptop", "toilet"}
    assert cfg["fit"]["n_seeds"] == 5


def test_defaults_filled_and_task_overrides(base):
    cfg = validate(base)
    pen = resolve_task(cfg, "adroit", "pen")
    relocate = resolve_task(cfg, "adroit", "relocate")
    assert pen.settings["horizon"] == 100 and relocate.settings["horizon"] == 200
    assert relocate.settings["camera"]["fovy_deg"] == 45.0  # schema default
    assert relocate.n_demos("train") == 50 and relocate.n_demos("test") == 30
    assert len(relocate.seeds("train")) == 500


def test_smoke_profile_merges(root):
    cfg = load_config([root / "config/config.yaml", root / "config/smoke.yaml"])
    assert target_tasks(cfg) == [("adroit", "relocate")]
    t = resolve_task(cfg, "adroit", "relocate")
    assert t.n_demos("train") == 2 and t.settings["expert"]["name"] == "adroit_relocate"


def test_unknown_suite_and_task_name_allowed_values(base):
    cfg = validate(base)
    with pytest.raises(ConfigError, match=r"unknown suite 'robosuite'.*\['adroit', 'dexart'\]"):
        split_task_id(cfg, "robosuite/lift")
    with pytest.raises(ConfigError, match=r"unknown task 'drawer'.*'relocate'"):
        split_task_id(cfg, "adroit/drawer")
    bad = copy.deepcopy(base)
    bad["targets"] = ["adroit/drawer"]
    with pytest.raises(ConfigError, match="drawer"):
        validate(bad)


def test_typo_key_names_key_and_allowed(base):
    bad = copy.deepcopy(base)
    bad["suites"]["adroit"]["tasks"]["relocate"]["horizn"] = 10
    with pytest.raises(ConfigError, match=r"suites\.adroit\.tasks\.relocate: unknown key\(s\) \['horizn'\].*horizon"):
        validate(bad)


def test_wrong_type_and_enum(base):
    bad = copy.deepcopy(base)
    bad["suites"]["adroit"]["defaults"]["horizon"] = "long"
    with pytest.raises(ConfigError, match=r"suites\.adroit\.defaults\.horizon: expected integer"):
        validate(bad)
    bad = copy.deepcopy(base)
    bad["suites"]["adroit"]["simulator"] = "bullet"
    with pytest.raises(ConfigError, match=r"simulator: 'bullet' is not allowed; allowed values: \['mujoco', 'sapien'\]"):
        validate(bad)


def test_overlapping_seeds_rejected(base):
    bad = copy.deepcopy(base)
    bad["suites"]["adroit"]["tasks"]["door"]["seeds"] = {"train": {"start": 0, "count": 100}, "test": {"start": 50, "count": 10}}
    with pytest.raises(ConfigError, match=r"suites\.adroit\.tasks\.door\.seeds: train seeds \[0, 100\) and test seeds \[50, 60\) overlap"):
        validate(bad)


def test_demo_count_beyond_seed_budget(base):
    bad = copy.deepcopy(base)
    bad["suites"]["dexart"]["defaults"]["n_demos"]["train"] = 1000
    with pytest.raises(ConfigError, match=r"n_demos\.train=1000 exceeds the seed budget .*count=300"):
        validate(bad)


def test_task_hash_changes_with_settings(base):
    cfg = validate(base)
    h1 = resolve_task(cfg, "adroit", "relocate").hash()
    base["suites"]["adroit"]["tasks"]["relocate"]["horizon"] = 150
    assert resolve_task(validate(base), "adroit", "relocate").hash() != h1
    assert resolve_task(validate(base), "adroit", "door").hash() == resolve_task(cfg, "adroit", "door").hash()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])


def test_dexart_assets_keys_validate_and_do_not_rehash_unset_tasks():
    from kubm.config import load_config, stage_hash, validate

    cfg = load_config()
    before = stage_hash(cfg, "dexart", "bucket", "collect")
    cfg["suites"]["dexart"]["tasks"]["bucket"]["assets_dir"] = "/data/dexart/assets"
    cfg["suites"]["dexart"]["tasks"]["bucket"]["instances"] = [100431]
    cfg = validate(cfg)
    assert stage_hash(cfg, "dexart", "bucket", "collect") != before
    assert stage_hash(cfg, "dexart", "faucet", "collect") == stage_hash(load_config(), "dexart", "faucet", "collect")
    cfg["suites"]["dexart"]["tasks"]["bucket"]["instances"] = "some"
    with pytest.raises(ConfigError, match="instances"):
        validate(cfg)


# --- bad values the schema alone let through (issue: bad input never crashes) ----------

@pytest.mark.parametrize("edit, message", [
    (lambda c: c["suites"]["dexart"]["defaults"]["seeds"]["train"].update(start=0.0),
     r"suites\.dexart\.defaults\.seeds\.train\.start: expected an integer, got float 0\.0; write it without a decimal point"),
    (lambda c: c["fit"]["kubm"].update(lr_g=float("nan")), r"fit\.kubm\.lr_g: expected a finite number, got nan"),
    (lambda c: c["fit"]["regression"].update(ridge=float("inf")), r"fit\.regression\.ridge: expected a finite number, got inf"),
    (lambda c: c["train_ae"].update(epochs=30.5), r"train_ae\.epochs: expected an integer"),
    (lambda c: c["suites"]["adroit"]["tasks"]["door"]["expert"].update(name="adroit_dor"),
     r"suites\.adroit\.tasks\.door\.expert\.name: unknown expert 'adroit_dor'; known experts: \[.*'adroit_door'"),
    (lambda c: c["suites"]["dexart"]["tasks"]["bucket"]["expert"].update(name="adroit_door"),
     r"expert 'adroit_door' drives \['mujoco'\], not this suite's simulator 'sapien'; experts for sapien: \[.*'dexart_bucket'"),
    (lambda c: (c["suites"]["adroit"]["defaults"].update(methods=["kubm", "diffusion"]),
                c["fit"]["diffusion"].update(chunk_steps=10)),
     r"fit\.diffusion \(with suites\.adroit\.tasks\..*\.method_params\.diffusion\): .*chunk_steps=10 must be a multiple of 2\^"),
    (lambda c: (c["suites"]["adroit"]["defaults"].update(methods=["act"]),
                c["suites"]["adroit"]["tasks"]["pen"].update(method_params={"act": {"chunk_size": 5, "n_action_steps": 9}})),
     r"suites\.adroit\.tasks\.pen\.method_params\.act\): .*n_action_steps=9 must be in \[1, chunk_size=5\]"),
])
def test_bad_values_are_config_errors_naming_the_key(base, edit, message):
    edit(base)
    with pytest.raises(ConfigError, match=message):
        validate(base)


def test_per_method_seed_counts(base):
    base["fit"]["n_seeds_by_method"] = {"diffusion": 3}
    from kubm.config import method_seeds
    cfg = validate(base)
    assert list(method_seeds(cfg, "diffusion")) == [0, 1, 2] and len(method_seeds(cfg, "kubm")) == 5
    base["fit"]["n_seeds_by_method"] = {"dp": 3}
    with pytest.raises(ConfigError, match=r"fit\.n_seeds_by_method"):
        validate(base)


def _stage_hashes() -> dict:
    """Task and per-method fit hashes of every config profile (what Snakemake's params compare)."""
    from kubm.config import all_tasks, method_hash
    from kubm.policies.registry import method_names

    out = {}
    for prof in ["config/config.yaml", "config/study.yaml", "config/smoke.yaml", "config/smoke_dexart.yaml",
                 "config/noreplan.yaml"]:
        cfg = load_config([DEFAULT_CONFIG] + ([Path(prof)] if prof != "config/config.yaml" else []))
        out[prof] = {f"{s}/{t}": {"task": resolve_task(cfg, s, t).hash(),
                                  "methods": {m: method_hash(cfg, s, t, m) for m in method_names()}}
                     for s, t in all_tasks(cfg)}
    return out


def test_renamed_horizons_keep_every_stage_hash():
    """fit.kubm.horizon → window_steps and fit.diffusion.horizon → chunk_steps changed names,
    not meanings: every profile's stage hashes equal those recorded before the rename, so no
    committed result goes stale. (Re-recorded on purpose when a change is meant to move data:
    visual_max_triangles moved the DexArt tasks' hashes.)"""
    recorded = json.loads((Path(__file__).parent / "data" / "stage_hashes.json").read_text())
    assert _stage_hashes() == recorded


def test_a_real_change_still_changes_the_hash():
    from kubm.config import method_hash

    cfg = load_config([DEFAULT_CONFIG])
    before = method_hash(cfg, "adroit", "relocate", "kubm")
    cfg["fit"]["kubm"]["window_steps"] += 1
    assert method_hash(cfg, "adroit", "relocate", "kubm") != before


@pytest.mark.parametrize("block", ["fit", "method_params"])
def test_an_old_key_name_names_its_new_name(block):
    base = load_config([DEFAULT_CONFIG])
    if block == "fit":
        base["fit"]["diffusion"]["horizon"] = 16
        where = r"fit\.diffusion\.horizon was renamed fit\.diffusion\.chunk_steps"
    else:
        base["suites"]["adroit"]["tasks"]["relocate"]["method_params"] = {"kubm": {"horizon": 20}}
        where = r"method_params\.kubm\.horizon was renamed .*method_params\.kubm\.window_steps"
    with pytest.raises(ConfigError, match=where):
        validate(base)


def test_a_model_saved_with_the_old_key_name_loads():
    from kubm.policies.diffusion import DiffusionConfig
    from kubm.policies.kubm import KubmConfig

    assert KubmConfig.from_dict({"horizon": 7}).window_steps == 7
    assert DiffusionConfig.from_dict({"horizon": 8, "n_action_steps": 4}).chunk_steps == 8
