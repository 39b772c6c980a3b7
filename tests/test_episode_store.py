import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from kubm.storage.episode_store import (
    ArraySpec,
    EpisodeStore,
    EpisodeWriter,
    StoreError,
    describe,
)

H = W = 16
SPECS = [
    ArraySpec("action", (4,), "float32"),
    ArraySpec("qpos", (7,), "float32"),
    ArraySpec("rgb", (H, W, 3), "uint8", big=True),
    ArraySpec("depth", (H, W), "float32", big=True),
    ArraySpec("seg", (H, W), "uint8", big=True),
]
META = {"seed": "int64", "success": "bool"}
ATTRS = {"fps": 20, "d_q": 7, "camera": {"K": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]}}


def make_episode(seed, T=None):
    rng = np.random.default_rng(seed)
    T = T or int(rng.integers(5, 40))
    data = {
        "action": rng.normal(size=(T, 4)).astype(np.float32),
        "qpos": rng.normal(size=(T, 7)).astype(np.float32),
        "rgb": rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        "depth": rng.random((T, H, W), dtype=np.float32),
        "seg": np.zeros((T, H, W), np.uint8),  # all-fill chunks must still be written
    }
    return data, {"seed": seed, "success": seed % 2 == 0}


def writer(path, **kw):
    kw = {"producer": "collect", "data": SPECS, "meta": META, "attrs": {}, **kw}
    return EpisodeWriter(path, **kw)


def write(path, seeds, **kw):
    with writer(path, **{"attrs": ATTRS, **kw}) as w:
        for s in seeds:
            w.append_episode(*make_episode(s))
        return w.finish()


def test_round_trip(tmp_path):
    p = write(tmp_path / "s.zarr", range(3))
    assert p == tmp_path / "s.zarr" and not (tmp_path / "s.zarr.partial").exists()
    st = EpisodeStore.open(p, producer="collect", required=["rgb", "action"])
    assert st.n_episodes == 3 and st.keys() == sorted(s.name for s in SPECS)
    assert st.attrs["fps"] == 20 and st.attrs["camera"] == ATTRS["camera"]
    own = (st.attrs["kubm_format"], st.attrs["producer"], st.attrs["complete"])
    assert own == (1, "collect", True)
    eps = [make_episode(s) for s in range(3)]
    assert st.episode_ends.tolist() == np.cumsum([len(d["action"]) for d, _ in eps]).tolist()
    assert st.n_steps == st.episode_ends[-1]
    for name in st.keys():
        whole = st.array(name)
        assert whole.dtype == np.dtype(next(s.dtype for s in SPECS if s.name == name))
        np.testing.assert_array_equal(whole, np.concatenate([d[name] for d, _ in eps]))
    assert st.meta("seed").tolist() == [0, 1, 2]
    assert st.meta("success").dtype == bool and st.meta("success").tolist() == [True, False, True]
    assert "episodes=3" in describe(p) and "shards=" in describe(p)


def test_append_many_and_read_each(tmp_path):
    seeds = list(range(40))
    p = write(tmp_path / "s.zarr", seeds, chunk_rows=64)
    st = EpisodeStore.open(p)
    assert st.n_episodes == 40
    for i, s in enumerate(seeds):
        d, _ = make_episode(s)
        ep = st.episode(i)
        assert ep.keys() == d.keys()
        for k in d:
            np.testing.assert_array_equal(ep[k], d[k])
    assert st.episode(-1, keys=["qpos"]).keys() == {"qpos"}
    with pytest.raises(IndexError):
        st.episode_slice(40)


def test_deterministic(tmp_path):
    a = EpisodeStore.open(write(tmp_path / "a.zarr", range(5)))
    b = EpisodeStore.open(write(tmp_path / "b.zarr", range(5)))
    for k in a.keys():
        assert a.array(k).tobytes() == b.array(k).tobytes()


def test_layout(tmp_path):
    specs = [
        ArraySpec("action", (4,), "float32"),
        ArraySpec("rgb", (128, 128, 3), "uint8", big=True),
        ArraySpec("depth", (128, 128), "float32", big=True),
    ]
    with writer(tmp_path / "s.zarr", data=specs, meta={}, chunk_rows=300) as w:
        p = w.finish()
    g = zarr.open_group(p, mode="r")
    assert g["data/action"].chunks == (300, 4) and g["data/action"].shards is None
    for name, row_bytes in [("rgb", 128 * 128 * 3), ("depth", 128 * 128 * 4)]:
        arr = g[f"data/{name}"]
        assert arr.chunks[1:] == arr.shards[1:] == arr.shape[1:]  # feature dims never split
        assert 16 <= arr.chunks[0] <= 64 and arr.shards[0] % arr.chunks[0] == 0
        assert 10e6 <= arr.shards[0] * row_bytes <= 100e6
        assert type(arr.compressors[0]).__name__ == "BloscCodec"


def test_missing_path(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        EpisodeStore.open(tmp_path / "nope.zarr")


def test_not_a_group(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(StoreError, match="not a zarr"):
        EpisodeStore.open(tmp_path / "x.zarr")


def test_incompatible_producer(tmp_path):
    p = write(tmp_path / "s.zarr", range(2))
    with pytest.raises(StoreError, match="producer 'collect', expected 'segment'"):
        EpisodeStore.open(p, producer="segment")


def _edit_attrs(p, **kv):
    meta_file = p / "zarr.json"
    m = json.loads(meta_file.read_text())
    m["attributes"].update(kv)
    meta_file.write_text(json.dumps(m))


def test_wrong_format(tmp_path):
    p = write(tmp_path / "s.zarr", range(2))
    _edit_attrs(p, kubm_format=0)
    with pytest.raises(StoreError, match="kubm_format 0"):
        EpisodeStore.open(p)
    with pytest.raises(StoreError, match="kubm_format"):
        EpisodeStore.open(write(tmp_path / "t.zarr", range(1)), format_version=2)


def test_partial_store(tmp_path):
    p = write(tmp_path / "s.zarr", range(2))
    _edit_attrs(p, complete=False)
    with pytest.raises(StoreError, match="partial"):
        EpisodeStore.open(p)


def test_killed_writer_leaves_partial_then_overwritten(tmp_path):
    # A process killed before finish(): only `.partial` exists; readers refuse it.
    p = tmp_path / "s.zarr"
    code = (
        "import os, numpy as np\n"
        "from kubm.storage.episode_store import EpisodeWriter, ArraySpec\n"
        f"w = EpisodeWriter({str(p)!r}, producer='collect', data=[ArraySpec('a', (2,), 'float32')],"
        " meta={}, attrs={})\n"
        "w.append_episode({'a': np.ones((300, 2), np.float32)}, {})\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    partial = tmp_path / "s.zarr.partial"
    assert partial.exists() and not p.exists()
    with pytest.raises(StoreError, match="partial"):
        EpisodeStore.open(p)
    with pytest.raises(StoreError, match="partial"):
        EpisodeStore.open(partial)
    write(p, range(2))
    assert not partial.exists() and EpisodeStore.open(p).n_episodes == 2


def test_episode_ends_disagree(tmp_path):
    p = write(tmp_path / "s.zarr", range(3))
    g = zarr.open_group(p, mode="r+")
    ends = g["meta/episode_ends"]
    ends[-1] = ends[-1] + 1
    with pytest.raises(StoreError, match="episode_ends"):
        EpisodeStore.open(p)


@pytest.mark.parametrize("name", ["action", "rgb"])
@pytest.mark.parametrize("damage", ["garbage", "flip", "empty", "delete"])
def test_corrupted_chunk(tmp_path, name, damage):
    p = write(tmp_path / "s.zarr", range(3))
    f = p / "data" / name / "c" / "0" / "0" / ("0/0" if name == "rgb" else "")
    f = f if f.is_file() else f.parent
    assert f.is_file()
    raw = bytearray(f.read_bytes())
    if damage == "garbage":
        f.write_bytes(np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes())
    elif damage == "flip":  # in the compressed payload: only the crc32c codec notices
        i = len(raw) // 3
        raw[i : i + 8] = bytes(b ^ 0xFF for b in raw[i : i + 8])
        f.write_bytes(bytes(raw))
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.unlink()
    with pytest.raises(StoreError, match="corrupt|cannot decode"):
        st = EpisodeStore.open(p)  # missing/empty files are caught here ...
        st.array(name)  # ... undecodable ones on read
    if damage in ("garbage", "flip"):
        with pytest.raises(StoreError, match="cannot decode"):
            EpisodeStore.open(p).episode(0)


def test_missing_required_array(tmp_path):
    p = write(tmp_path / "s.zarr", range(1))
    with pytest.raises(StoreError, match="missing required arrays.*object_state"):
        EpisodeStore.open(p, required=["rgb", "object_state"])
    st = EpisodeStore.open(p)
    with pytest.raises(StoreError, match="no data array"):
        st.array("object_state")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d, m: d.update(rgb=d["rgb"][:, :8]), "shape"),
        (lambda d, m: d.update(qpos=d["qpos"].astype(np.float64)), "dtype"),
        (lambda d, m: d.update(action=d["action"][:-1]), "common length"),
        (lambda d, m: d.pop("seg"), "declared"),
        (lambda d, m: d.update(extra=d["qpos"]), "declared"),
        (lambda d, m: m.pop("seed"), "meta"),
        (lambda d, m: m.update(seed=[1, 2]), "scalar"),
    ],
)
def test_bad_append(tmp_path, edit, match):
    d, m = make_episode(0)
    edit(d, m)
    with pytest.raises(StoreError, match=match):
        with writer(tmp_path / "s.zarr") as w:
            w.append_episode(d, m)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.zarr.partial").exists()


def test_exception_inside_with_leaves_nothing(tmp_path):
    p = tmp_path / "s.zarr"
    with pytest.raises(KeyError):
        with writer(p) as w:
            w.append_episode(*make_episode(0))
            raise KeyError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(StoreError, match="without finish"):
        with writer(p) as w:
            w.append_episode(*make_episode(0))
    assert os.listdir(tmp_path) == []


def test_overwrite(tmp_path):
    p = write(tmp_path / "s.zarr", range(2))
    with pytest.raises(StoreError, match="already exists"):
        write(p, range(3))
    # overwrite=True keeps the old store until the new one is finished.
    with pytest.raises(RuntimeError):
        with writer(p, overwrite=True) as w:
            w.append_episode(*make_episode(5))
            raise RuntimeError("interrupted")
    assert EpisodeStore.open(p).n_episodes == 2
    write(p, range(3), overwrite=True)
    assert EpisodeStore.open(p).n_episodes == 3
    assert sorted(os.listdir(tmp_path)) == ["s.zarr"]


def test_attrs_updated_before_finish(tmp_path):
    with writer(tmp_path / "s.zarr", attrs={"fps": 20}) as w:
        w.append_episode(*make_episode(0))
        w.attrs.update(kept=1, acceptance_rate=0.5)
        p = w.finish()
    a = EpisodeStore.open(p).attrs
    assert (a["fps"], a["kept"], a["acceptance_rate"], a["complete"]) == (20, 1, 0.5, True)
    with pytest.raises(StoreError, match="JSON"):
        with writer(tmp_path / "t.zarr") as w:
            w.attrs["bad"] = np.float32(1)
            w.finish()
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "t.zarr.partial").exists()


def test_bad_attrs(tmp_path):
    with pytest.raises(StoreError, match="JSON"):
        writer(tmp_path / "s.zarr", attrs={"x": object()})
    with pytest.raises(StoreError, match="set by the store"):
        writer(tmp_path / "s.zarr", attrs={"complete": True})


def test_no_data_arrays_store(tmp_path):
    with writer(tmp_path / "s.zarr", data=[], meta={}) as w:
        p = w.finish()
    st = EpisodeStore.open(p)
    assert st.keys() == [] and st.meta_keys() == ["episode_ends"] and st.n_episodes == 0


def test_empty_store(tmp_path):
    with writer(tmp_path / "s.zarr") as w:
        p = w.finish()
    st = EpisodeStore.open(p)
    assert st.n_episodes == 0 and st.n_steps == 0 and st.array("rgb").shape == (0, H, W, 3)
