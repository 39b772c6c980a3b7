"""Decimated robot visual meshes for DexArt rendering (kubm.sim.dexart.visual_lod, visual_max_triangles)."""

from __future__ import annotations

import importlib.util
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from kubm.config import ConfigError
from kubm.sim.dexart import visual_lod as L


def sphere(n_lat: int = 40, n_lon: int = 80, r: float = 0.05):
    """A UV sphere: vertices (n, 3) and triangles (m, 3)."""
    lat = np.linspace(0, np.pi, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    v = np.array([[r * np.sin(a) * np.cos(b), r * np.sin(a) * np.sin(b), r * np.cos(a)] for a in lat for b in lon])
    f = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            f += [[a, c, b], [b, c, d]]
    return v, np.array(f)


POLE_TRIANGLES = 2 * 80  # sphere()'s pole rows collapse to lines once the pole copies are welded


def write_binary_stl(path, v, f):
    corners = v[f].astype(np.float32)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 80 + struct.pack("<I", len(f)))
        for tri in corners:
            fh.write(struct.pack("<3f", 0, 0, 0) + tri.tobytes() + b"\0\0")


def radial_error(v, r=0.05):
    return float(np.abs(np.linalg.norm(v, axis=1) - r).max())


def test_stl_is_decimated_to_the_cap_and_keeps_its_shape(tmp_path):
    v, f = sphere()
    src = tmp_path / "ball.stl"
    write_binary_stl(src, v, f)
    verts, faces, material = L.read_mesh(src)
    assert len(faces) == len(f) - POLE_TRIANGLES and material == []
    assert len(verts) < 3 * len(f)  # corners shared again after STL's per-triangle copies
    out = L.decimated(src, 500, tmp_path / "cache")
    assert out != src and out.suffix == ".obj"
    v2, f2, _ = L.read_mesh(out)
    assert 0 < len(f2) <= 500
    assert radial_error(v2) < 0.1 * 0.05  # within 10 % of the radius: still the sphere, not a blob
    assert L.decimated(src, 500, tmp_path / "cache") == out  # cached: same source and cap, same file
    assert out.read_bytes() == L.decimated(src, 500, tmp_path / "cache2").read_bytes()  # deterministic


def test_small_meshes_and_multi_material_objs_are_kept(tmp_path):
    v, f = sphere(6, 8)
    src = tmp_path / "small.stl"
    write_binary_stl(src, v, f)
    assert L.decimated(src, 1000, tmp_path / "cache") == src
    v, f = sphere()
    obj = tmp_path / "two.obj"
    half = len(f) // 2
    obj.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + "usemtl red\n"
                   + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f[:half]) + "usemtl blue\n"
                   + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f[half:]))
    assert L.decimated(obj, 500, tmp_path / "cache") == obj


def test_obj_quads_material_and_ascii_stl(tmp_path):
    v, f = sphere()
    (tmp_path / "paint.mtl").write_text("newmtl black\nKd 0 0 0\n")
    # the same sphere as quads (pairs of triangles), with normals/uv indices in the face tokens
    quads = [f"f {a + 1}/1/1 {c + 1}/1/1 {d + 1}/1/1 {b + 1}/1/1\n" for a, c, b, _, _, d in
             (tuple(f[k]) + tuple(f[k + 1]) for k in range(0, len(f), 2))]
    obj = tmp_path / "ball.obj"
    obj.write_text("mtllib paint.mtl\n" + "".join(f"v {a} {b} {c}\n" for a, b, c in v) + "usemtl black\n" + "".join(quads))
    _, faces, material = L.read_mesh(obj)
    assert len(faces) == len(f) - POLE_TRIANGLES and material == ["mtllib paint.mtl", "usemtl black"]
    out = L.decimated(obj, 400, tmp_path / "cache")
    text = out.read_text()
    assert f"mtllib {(tmp_path / 'paint.mtl').resolve()}" in text and "usemtl black" in text  # colour kept
    assert len(L.read_mesh(out)[1]) <= 400
    ascii_stl = tmp_path / "tri.stl"
    ascii_stl.write_text("solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
                         "endloop\nendfacet\nendsolid t\n")
    assert len(L.read_mesh(ascii_stl)[1]) == 1
    with pytest.raises(Exception, match="only .stl and .obj"):
        L.read_mesh(tmp_path / "paint.mtl")


needs_robot_assets = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("mani_skill", "pybullet_data", "fast_simplification")),
    reason="the DexArt robot's assets (mani-skill, pybullet) and fast-simplification")


@needs_robot_assets
def test_combined_urdf_points_large_visual_meshes_at_copies(tmp_path):
    from kubm.sim.dexart import robot as R

    def meshes(text, tag):
        root = ET.fromstring(text)
        return [m.get("filename") for el in root.iter(tag) for m in el.iter("mesh")]

    plain = R.combined_urdf(visual=True)
    capped = R.combined_urdf(visual=True, max_triangles=1000, cache_dir=tmp_path)
    assert meshes(plain, "collision") == meshes(capped, "collision")  # physics untouched
    changed = [(a, b) for a, b in zip(meshes(plain, "visual"), meshes(capped, "visual")) if a != b]
    assert any("link2.stl" in a for a, _ in changed)  # the xArm's 26 k-triangle link
    for a, b in zip(meshes(plain, "visual"), meshes(capped, "visual")):
        assert L.triangle_count(Path(b)) <= 1000, (a, b)  # every rendered mesh is within the cap


def test_adroit_refuses_the_dexart_only_setting():
    from kubm.sim.registry import make_env

    with pytest.raises(ConfigError, match="visual_max_triangles decimates DexArt"):
        make_env("adroit", "door", {"visual_max_triangles": 1000}, render=False)


@needs_robot_assets
def test_a_capped_robot_renders_the_same_scene(tmp_path):
    """The decimated robot loads in SAPIEN and the picture barely moves: segmentation agrees on
    more than 99 % of pixels with the original meshes (render_lod.json has the measured figures)."""
    from kubm.sim.dexart.env import DexArtEnv

    import sapien

    pictures, triangles = {}, {}
    for cap in (None, 1000):
        env = DexArtEnv("bucket", visual_max_triangles=cap)
        try:
            env.reset(100000)
            _, depth, seg = env.render()
            pictures[cap] = (depth, seg)
            bodies = [link.entity.find_component_by_type(sapien.render.RenderBodyComponent) for link in env.robot.get_links()]
            triangles[cap] = sum(len(p.triangles) for b in bodies if b is not None for s in b.render_shapes
                                 if isinstance(s, sapien.render.RenderShapeTriangleMesh) for p in s.parts)
        finally:
            env.close()
    assert triangles[1000] < 0.5 * triangles[None]  # the cap reached the renderer
    (d0, s0), (d1, s1) = pictures[None], pictures[1000]
    assert (s0 == s1).mean() > 0.99 and (np.abs(d0 - d1) < 1e-2).mean() > 0.99
    assert (s1 > 0).sum() == pytest.approx((s0 > 0).sum(), rel=0.05)  # the robot and object are all there
