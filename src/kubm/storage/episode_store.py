"""Episode stores: zarr v3 groups of per-step arrays concatenated over episodes.

Layout (docs/design.md, "Stage contracts")::

    <store>/data/<name>          (N, *shape)   per-step arrays, episodes back to back
    <store>/meta/episode_ends    (E,) int64    cumulative ends
    <store>/meta/<name>          (E,)          per-episode scalars (seed, success, ...)
    attrs: caller provenance + kubm_format, producer, complete

Writers work in ``<path>.partial`` and rename to ``<path>`` only in ``finish()``, so a
store that exists at its final path is always complete.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from kubm.errors import DataError

FORMAT_VERSION = 1
FRAME_CHUNK = 32  # rows per inner chunk of a sharded (big) array
SHARD_BYTES = 32 << 20  # target uncompressed shard size (docs/design.md, "Stage contracts": few files for DVC)
_META_CHUNK = 4096
_RESERVED = ("kubm_format", "producer", "complete")


class StoreError(DataError, RuntimeError):
    """A store is missing, partial, incompatible or corrupt, or a write was invalid."""


@dataclass(frozen=True)
class ArraySpec:
    name: str  # "rgb"
    shape: tuple[int, ...]  # per-step shape, e.g. (128, 128, 3)
    dtype: str  # "uint8"
    big: bool = False  # True -> sharded (images)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _fix(path: Path, producer: str | None) -> str:
    how = f"`kubm {producer} ...`" if producer else "the stage that produces it"
    return f"delete {path} and rerun {how} (or `snakemake --forcerun` on it)"


def _compressors() -> list:
    # Blosc/zstd for size; crc32c because Blosc alone decodes flipped bytes silently.
    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec()]


def _layout(spec: ArraySpec, chunk_rows: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards); never split the feature dims, never rely on auto-chunking."""
    if not spec.big:
        return (chunk_rows, *spec.shape), None
    row_bytes = np.dtype(spec.dtype).itemsize * math.prod(spec.shape)
    shard_rows = max(1, SHARD_BYTES // (row_bytes * FRAME_CHUNK)) * FRAME_CHUNK
    return (FRAME_CHUNK, *spec.shape), (shard_rows, *spec.shape)


class EpisodeWriter:
    """Append episodes to a new store; see module docstring for atomicity."""

    def __init__(self, path, *, producer: str, data: list[ArraySpec], meta: dict[str, str],
                 attrs: dict, overwrite: bool = False, chunk_rows: int = 256):
        self.path = Path(path)
        self._tmp = _partial(self.path)
        self._overwrite = overwrite
        self._done = False
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path}: store already exists; delete it or pass overwrite=True")
        names = [s.name for s in data]
        if len(set(names)) != len(names) or any("/" in n or not n for n in names):
            raise StoreError(f"{self.path}: data array names must be unique, without '/': {names}")
        if "episode_ends" in meta:
            raise StoreError(f"{self.path}: 'episode_ends' is written by the store itself")
        # Caller provenance; may still be updated (e.g. acceptance rate) until finish().
        self.attrs: dict = dict(attrs)
        self._producer = producer
        full = self._full_attrs(complete=False)
        if self._tmp.exists():  # left by a killed writer: nothing in it can be trusted
            shutil.rmtree(self._tmp)
        self._tmp.parent.mkdir(parents=True, exist_ok=True)
        self._group = zarr.open_group(self._tmp, mode="w", zarr_format=3, attributes=full)
        # write_empty_chunks: every chunk file exists, so a missing file means corruption.
        cfg = {"write_empty_chunks": True}
        self._group.require_group("data"), self._group.require_group("meta")
        self._specs = {s.name: s for s in data}
        self._arrays = {}
        for s in data:
            chunks, shards = _layout(s, chunk_rows)
            self._arrays[s.name] = self._group.create_array(
                f"data/{s.name}", shape=(0, *s.shape), dtype=s.dtype, chunks=chunks, shards=shards,
                compressors=_compressors(), fill_value=0, config=cfg)
        self._meta_dtypes = {"episode_ends": "int64", **meta}
        self._meta_arrays = {}
        for name, dt in self._meta_dtypes.items():
            self._meta_arrays[name] = self._group.create_array(
                f"meta/{name}", shape=(0,), dtype=dt, chunks=(_META_CHUNK,),
                compressors=_compressors(), fill_value=0, config=cfg)
        self._meta: dict[str, list] = {n: [] for n in self._meta_dtypes}  # written in finish()
        self._n_steps = 0

    def _full_attrs(self, complete: bool) -> dict:
        clash = [k for k in _RESERVED if k in self.attrs]
        if clash:
            raise StoreError(f"{self.path}: attrs {clash} are set by the store (use producer=)")
        full = {**self.attrs, "kubm_format": FORMAT_VERSION, "producer": self._producer,
                "complete": complete}
        try:
            json.dumps(full, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise StoreError(f"{self.path}: attrs are not JSON-serialisable ({e})") from e
        return full

    def append_episode(self, data: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if self._done:
            raise StoreError(f"{self.path}: writer is closed")
        if set(data) != set(self._specs):
            raise StoreError(f"{self.path}: episode arrays {sorted(data)} != declared "
                             f"{sorted(self._specs)}")
        want_meta = set(self._meta_dtypes) - {"episode_ends"}
        if set(meta) != want_meta:
            raise StoreError(f"{self.path}: episode meta {sorted(meta)} != declared "
                             f"{sorted(want_meta)}")
        data = {k: np.asarray(a) for k, a in data.items()}
        for name, a in data.items():
            want = tuple(self._specs[name].shape)
            if a.ndim != len(want) + 1 or a.shape[1:] != want:
                raise StoreError(f"{self.path}: data/{name} has shape {a.shape}, "
                                 f"expected (T, *{want})")
            if a.dtype != np.dtype(self._specs[name].dtype):  # exact: a silent cast hides bugs
                raise StoreError(f"{self.path}: data/{name} has dtype {a.dtype}, expected "
                                 f"{self._specs[name].dtype}; cast it first")
        lengths = {a.shape[0] for a in data.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise StoreError(f"{self.path}: episode arrays need one common length T >= 1, "
                             f"got {sorted(lengths)}")
        vals = {}
        for name, v in meta.items():
            if np.ndim(v) != 0:
                raise StoreError(f"{self.path}: meta/{name} must be a scalar, "
                                 f"got shape {np.shape(v)}")
            vals[name] = np.asarray(v).astype(self._meta_dtypes[name])
        (T,) = lengths
        # Append rewrites at most the partial last chunk/shard (zarr keeps the other encoded
        # inner chunks of a shard as they are), so the cost stays O(episode); measured flat in
        # benchmarks/store_append.py.
        try:
            for name, a in data.items():
                self._arrays[name].append(a, axis=0)
        except BaseException:
            self.close()  # arrays now disagree in length: the store cannot be finished
            raise
        self._n_steps += T
        for name, v in vals.items():
            self._meta[name].append(v)
        self._meta["episode_ends"].append(self._n_steps)

    def finish(self) -> Path:
        if self._done:
            raise StoreError(f"{self.path}: writer is closed")
        for name, vals in self._meta.items():
            if vals:  # via the handle created with write_empty_chunks
                self._meta_arrays[name].append(np.asarray(vals, dtype=self._meta_dtypes[name]))
        try:
            full = self._full_attrs(complete=True)
        except StoreError:
            self.close()
            raise
        self._group.attrs.put(full)
        old = self.path.with_name(self.path.name + ".old")
        if self.path.exists():
            if not self._overwrite:
                self.close()
                raise StoreError(f"{self.path}: appeared while writing; delete it or pass "
                                 "overwrite=True")
            shutil.rmtree(old, ignore_errors=True)
            self.path.rename(old)  # keep the old store until the new one is in place
        self._tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._done = True
        return self.path

    def close(self) -> None:
        """Discard an unfinished store (idempotent); a finished one is left alone."""
        if not self._done:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._done = True

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        unfinished = not self._done
        self.close()
        if unfinished and exc_type is None:
            raise StoreError(f"{self.path}: writer left without finish(); nothing was written")


def _read(path: Path, arr, producer: str | None, sel=slice(None)) -> np.ndarray:
    try:
        return np.asarray(arr[sel])
    except Exception as e:  # codec/checksum failures surface as ValueError, RuntimeError, ...
        raise StoreError(f"{path}/{arr.path}: cannot decode chunk ({type(e).__name__}: {e}); "
                         f"{_fix(path, producer)}") from e


class EpisodeStore:
    """Read side; ``open`` validates the store so later reads can trust its shape."""

    def __init__(self, path: Path, group: zarr.Group, episode_ends: np.ndarray):
        self.path, self._group = path, group
        self.attrs: dict = group.attrs.asdict()
        self.episode_ends = episode_ends
        self.n_episodes = len(episode_ends)
        self.n_steps = int(episode_ends[-1]) if len(episode_ends) else 0

    @classmethod
    def open(cls, path, *, producer: str | None = None, format_version: int = FORMAT_VERSION,
             required: Iterable[str] = ()) -> EpisodeStore:
        path = Path(path)
        fix = _fix(path, producer)
        if not path.exists():
            if _partial(path).exists():
                raise StoreError(f"{path}: missing; {_partial(path)} is a partial store from an "
                                 f"interrupted writer; {_fix(_partial(path), producer)}")
            raise StoreError(f"{path}: no such store; run the stage that produces it")
        try:
            group = zarr.open_group(path, mode="r", zarr_format=3)
        except Exception as e:
            raise StoreError(f"{path}: not a zarr v3 group ({e}); {fix}") from e
        attrs = group.attrs.asdict()
        if attrs.get("complete") is not True or path.name.endswith(".partial"):
            raise StoreError(f"{path}: partial store (writer interrupted or never finished); {fix}")
        if attrs.get("kubm_format") != format_version:
            raise StoreError(f"{path}: kubm_format {attrs.get('kubm_format')!r}, this code reads "
                             f"{format_version}; {fix}")
        if producer is not None and attrs.get("producer") != producer:
            raise StoreError(f"{path}: made by producer {attrs.get('producer')!r}, expected "
                             f"{producer!r}; wrong input path, or {fix}")
        if "data" not in group or "meta/episode_ends" not in group:
            raise StoreError(f"{path}: corrupt: no data/ group or meta/episode_ends; {fix}")
        have = set(group["data"].array_keys())
        missing = [k for k in required if k not in have]
        if missing:
            raise StoreError(f"{path}: missing required arrays {missing} (has {sorted(have)}); "
                             f"a different producer's store, or {fix}")
        ends = _read(path, group["meta/episode_ends"], producer)
        bad = ends.ndim != 1 or ends.dtype != np.int64 or (len(ends) and ends[0] < 0) \
            or np.any(np.diff(ends) < 0)
        n = int(ends[-1]) if len(ends) and not bad else 0
        lengths = {k: group[f"data/{k}"].shape[0] for k in have}
        if bad or any(v != n for v in lengths.values()):
            raise StoreError(f"{path}: corrupt: episode_ends (last={n}) disagree with data lengths "
                             f"{lengths}; {fix}")
        for k in group["meta"].array_keys():
            if group[f"meta/{k}"].shape[0] != len(ends):
                raise StoreError(f"{path}: corrupt: meta/{k} has {group[f'meta/{k}'].shape[0]} "
                                 f"rows for {len(ends)} episodes; {fix}")
        # Missing or empty chunk/shard files read back as fill values without any error.
        for kind in ("data", "meta"):
            for k in group[kind].array_keys():
                arr = group[f"{kind}/{k}"]
                if 0 in arr.shape[1:]:  # zero-width (e.g. no context): zarr writes no chunks
                    continue
                unit = arr.metadata.chunk_grid.chunk_shape[0]  # shard rows when sharded
                for i in range(math.ceil(arr.shape[0] / unit)):
                    key = arr.metadata.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
                    f = path / arr.path / key
                    if not f.is_file() or f.stat().st_size == 0:
                        raise StoreError(f"{path}: corrupt: chunk file {f} is missing or empty; "
                                         f"{fix}")
        return cls(path, group, ends)

    def _read(self, arr, sel=slice(None)) -> np.ndarray:
        return _read(self.path, arr, self.attrs.get("producer"), sel)

    def _data(self, name: str):
        try:
            return self._group[f"data/{name}"]
        except KeyError:
            raise StoreError(f"{self.path}: no data array {name!r}; has {self.keys()}") from None

    def keys(self) -> list[str]:
        return sorted(self._group["data"].array_keys())

    def meta_keys(self) -> list[str]:
        return sorted(self._group["meta"].array_keys())

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for {self.n_episodes} episodes")
        i %= self.n_episodes
        start = int(self.episode_ends[i - 1]) if i else 0
        return slice(start, int(self.episode_ends[i]))

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        sl = self.episode_slice(i)
        return {k: self._read(self._data(k), sl) for k in (self.keys() if keys is None else keys)}

    def array(self, name: str) -> np.ndarray:
        return self._read(self._data(name))

    def meta(self, name: str) -> np.ndarray:
        if name not in self.meta_keys():
            raise StoreError(f"{self.path}: no meta array {name!r}; has {self.meta_keys()}")
        return self._read(self._group[f"meta/{name}"])


def describe(path, *, verify: bool = False) -> str:
    """Human summary; works on partial stores too. It counts the stored chunks of every
    array against the array's shape (a store flagged complete with chunks missing is
    reported as damaged); with ``verify`` it also decodes every chunk. Raises StoreError
    naming the array when ``verify`` finds a damaged or missing chunk."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        g = zarr.open_group(path, mode="r", zarr_format=3)
    except Exception as e:
        raise StoreError(f"{path}: not a zarr v3 group ({e})") from e
    a = g.attrs.asdict()
    lines = [f"{path}: producer={a.get('producer')!r} kubm_format={a.get('kubm_format')!r} "
             f"complete={a.get('complete')!r}"]
    if "meta/episode_ends" in g:
        ends = g["meta/episode_ends"][:]
        lines.append(f"  episodes={len(ends)} steps={int(ends[-1]) if len(ends) else 0}")
    missing = []
    for kind in ("data", "meta"):
        for k in sorted(g[kind].array_keys()) if kind in g else []:
            arr = g[f"{kind}/{k}"]
            stored, expected = arr.nchunks_initialized, arr.nchunks
            if stored < expected:
                missing.append(f"{kind}/{k} ({stored} of {expected} chunks)")
            lines.append(f"  {kind}/{k}: shape={arr.shape} dtype={arr.dtype} chunks={arr.chunks}"
                         + (f" shards={arr.shards}" if arr.shards else "") + f" stored={stored}/{expected}")
            if verify:
                try:
                    arr[...]
                except Exception as e:  # codec errors on a damaged chunk
                    raise StoreError(f"{path}: {kind}/{k} has a damaged chunk ({type(e).__name__}: {e}); "
                                     f"delete {path} and rerun the stage that writes it, or `dvc pull` it") from e
    lines.append(f"  attrs: {', '.join(sorted(a))}")
    if missing:
        what = "complete" if a.get("complete") else "partial"
        lines.append(f"  DAMAGED: flagged {what}, but chunks are missing: {'; '.join(missing)}")
        if verify:
            raise StoreError(f"{path}: chunks are missing ({'; '.join(missing)}); delete {path} and rerun the "
                             "stage that writes it, or `dvc pull` it")
    elif verify:
        lines.append("  verified: every chunk decodes")
    else:
        lines.append("  chunks present (not decoded; `kubm info --verify` decodes every chunk)")
    return "\n".join(lines)
