"""Decimated copies of the robot's visual meshes, for rendering at the cameras' 128 px.

A DexArt step's cost is SAPIEN's rasterisation on lavapipe, and that cost is the robot's
triangles: the xArm6's visual meshes carry 26 k triangles on one link, which covers about
130 pixels of a 128 x 128 image (`benchmarks/render_lod.py` measures time and pixel
agreement per cap). A visual mesh with more triangles than the cap is replaced by a
quadric-decimated copy (`fast-simplification`), written once to the cache directory under
a name derived from the source file's bytes and the cap, so the same source and cap always
give the same file. Collision meshes are never touched: physics is unchanged.

A mesh the decimator cannot bring down to the cap (it has a floor on meshes with open
borders) gets the smallest copy it reaches. Reads binary and ASCII STL and OBJ (one material; polygons fanned into triangles).
An OBJ with several materials is kept as it is, since per-face materials would be lost.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from kubm.sim.base import SimulatorError


def _read_stl(data: bytes) -> np.ndarray:
    """(n, 3, 3) triangle corners."""
    n = int(np.frombuffer(data[80:84], "<u4")[0]) if len(data) >= 84 else -1
    if len(data) == 84 + 50 * n:  # binary: the size matches the count exactly
        rec = np.frombuffer(data[84:], np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), n)
        return rec["v"].astype(np.float64)
    verts = [list(map(float, ln.split()[1:4])) for ln in data.decode("ascii", "replace").splitlines()
             if ln.strip().startswith("vertex")]
    if not verts or len(verts) % 3:
        raise SimulatorError("not a readable STL file")
    return np.asarray(verts, np.float64).reshape(-1, 3, 3)


def _read_obj(text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vertices (n, 3), triangles (m, 3) and the material lines (mtllib, usemtl)."""
    verts, faces, material = [], [], []
    for ln in text.splitlines():
        tok = ln.split()
        if not tok:
            continue
        if tok[0] == "v":
            verts.append([float(x) for x in tok[1:4]])
        elif tok[0] == "f":
            idx = [int(t.split("/")[0]) for t in tok[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i for i in idx]  # OBJ is 1-based; negatives count back
            faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
        elif tok[0] in ("mtllib", "usemtl"):
            material.append(ln.strip())
    return np.asarray(verts, np.float64).reshape(-1, 3), np.asarray(faces, np.int64).reshape(-1, 3), material


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Welded vertices, triangles and the OBJ material lines (empty for STL)."""
    suffix = path.suffix.lower()
    if suffix == ".stl":
        corners = _read_stl(path.read_bytes())
        verts, faces, material = corners.reshape(-1, 3), np.arange(3 * len(corners)).reshape(-1, 3), []
    elif suffix == ".obj":
        verts, faces, material = _read_obj(path.read_text(errors="replace"))
    else:
        raise SimulatorError(f"cannot decimate {path}: only .stl and .obj are read")
    # STL repeats each corner per triangle; the decimator needs shared vertices.
    uniq, inverse = np.unique(np.round(verts, 7), axis=0, return_inverse=True)
    return uniq, _nondegenerate(inverse.reshape(-1)[faces]), material


def _nondegenerate(faces: np.ndarray) -> np.ndarray:
    """Triangles whose three corners are distinct vertices (welding collapses some to lines)."""
    f = np.asarray(faces).reshape(-1, 3)
    return f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]


def triangle_count(path: Path) -> int:
    return len(read_mesh(path)[1])


def decimated(path: str | os.PathLike, max_triangles: int, cache_dir: str | os.PathLike) -> Path:
    """`path` itself when it has at most `max_triangles` triangles (or several materials),
    else a decimated OBJ copy in `cache_dir`."""
    path = Path(path)
    digest = hashlib.sha1(path.read_bytes() + f"|{max_triangles}".encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"{path.stem}_lod{max_triangles}_{digest}.obj"
    keep = Path(cache_dir) / f"{out.name}.keep"  # marks a source that needs no copy
    if out.is_file():
        return out
    if keep.is_file():
        return path
    verts, faces, material = read_mesh(path)
    if len(faces) <= max_triangles or sum(m.startswith("usemtl") for m in material) > 1:
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.touch()
        return path
    import fast_simplification  # only when a mesh needs it

    # The decimator stops near its target, sometimes above it: aim lower until within the cap.
    # Some meshes have a floor it cannot go below (open borders); then the smallest result is used.
    target, best_v, best_f = int(max_triangles), verts, faces
    for _ in range(6):
        v2, f2 = fast_simplification.simplify(verts, faces.astype(np.int32), target_count=target)
        f2 = _nondegenerate(f2)
        if len(f2) < len(best_f):
            best_v, best_f = v2, f2
        if len(f2) <= max_triangles:
            break
        target = max(4, int(target * max_triangles / len(f2)) - 1)
    v2, f2 = best_v, best_f
    lines = [f"mtllib {(path.parent / m.split(None, 1)[1]).resolve()}" if m.startswith("mtllib") else m
             for m in material]
    body = "".join(f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in v2)
    body += "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    # A comment names the source so the cache explains itself.
    tmp.write_text(f"# {path.name} decimated from {len(faces)} to {len(f2)} triangles\n"
                   + "".join(m + "\n" for m in lines) + body)
    os.replace(tmp, out)  # atomic: parallel evaluation workers may race here
    return out
