"""Point trackers: sim (exact geometry), OpenCV LK (synthetic motion), CoTracker3 (random weights)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from kubm.perception.tracking import (
    BackendUnavailable,
    FrameAux,
    Tracks,
    make_tracker,
    tracking_metrics,
)
from kubm.perception.tracking_lk import OpenCVLKTracker
from kubm.perception.tracking_sim import SimPointTracker, quat_to_matrix

# ----------------------------------------------------------------------------- sim geometry
# A pinhole camera looking at a textured 0.8 m square (the body's z=0 plane), rendered
# analytically: ray / plane intersection per pixel centre.
H = W = 64
K = np.array([[60.0, 0, 31.5], [0, 60.0, 31.5], [0, 0, 1]])
OBJ_ID = 7
HALF = 0.4
BG_DEPTH = 10.0


def rot(axis, angle) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * angle)[0]


def quat(axis, angle) -> np.ndarray:  # (w, x, y, z)
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.r_[np.cos(angle / 2), np.sin(angle / 2) * a]


W2C = np.eye(4)
W2C[:3, :3] = rot([1, 0.3, 0], 0.25)
W2C[:3, 3] = [0.1, -0.05, 2.0]


def render_plane(pos, axis, angle):
    """Depth [H,W] and seg [H,W] of the square at pose (pos, axis-angle), plus the pose row."""
    R = rot(axis, angle)
    Rcw = W2C[:3, :3].T
    C = -Rcw @ W2C[:3, 3]  # camera centre in the world
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # rays with z_cam = 1
    d_w = d_cam @ Rcw.T
    n = R[:, 2]
    s = ((np.asarray(pos) - C) @ n) / (d_w @ n)  # ray parameter = depth along the optical axis
    local = (C + s[..., None] * d_w - pos) @ R
    on = (s > 0) & (np.abs(local[..., 0]) <= HALF) & (np.abs(local[..., 1]) <= HALF)
    depth = np.where(on, s, BG_DEPTH).astype(np.float32)
    seg = np.where(on, OBJ_ID, 0).astype(np.int32)
    return depth, seg, np.r_[pos, quat(axis, angle)]


def expected_pixels(q_xy, pose0, pose_t):
    """Where pixels of frame 0 go: ray/plane point at frame 0, rigidly moved, projected."""
    (p0, a0, g0), (p1, a1, g1) = pose0, pose_t
    depth, _, _ = render_plane(p0, a0, g0)
    col, row = q_xy[:, 0].astype(int), q_xy[:, 1].astype(int)
    X_cam = depth[row, col, None] * np.c_[q_xy, np.ones(len(q_xy))] @ np.linalg.inv(K).T
    T0, T1 = np.eye(4), np.eye(4)
    T0[:3, :3], T0[:3, 3] = rot(a0, g0), p0
    T1[:3, :3], T1[:3, 3] = rot(a1, g1), p1
    M = W2C @ T1 @ np.linalg.inv(T0) @ np.linalg.inv(W2C)  # camera(0) -> camera(t)
    Xt = (np.c_[X_cam, np.ones(len(X_cam))] @ M.T)[:, :3] @ K.T
    return Xt[:, :2] / Xt[:, 2:]


POSES = [  # (position, rotation axis, angle): translate, rotate, both
    ((0.0, 0.0, 0.0), (0, 0, 1), 0.0),
    ((0.05, -0.03, 0.02), (0, 0, 1), 0.0),
    ((0.05, -0.03, 0.02), (0, 0, 1), 0.3),
    ((-0.04, 0.06, 0.1), (1, -1, 0.5), 0.35),
]


def plane_episode(poses=POSES):
    frames = []
    for p in poses:
        depth, seg, pose = render_plane(*p)
        frames.append(FrameAux(depth=depth, seg=seg, object_pose=pose[None], object_ids=np.array([OBJ_ID]),
                               K=K, world_to_cam=W2C))
    return FrameAux.stack(frames)


def plane_queries(aux: FrameAux, n=30, seed=0):
    m = aux.at(0).seg == OBJ_ID
    m = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    rc = np.argwhere(m)
    rc = rc[np.random.default_rng(seed).choice(len(rc), n, replace=False)]
    return np.c_[np.zeros(n), rc[:, 1], rc[:, 0]].astype(np.float32)


def test_sim_matches_analytic_projection():
    aux = plane_episode()
    q = plane_queries(aux)
    tr = SimPointTracker().track(None, q, aux)
    assert tr.xy.shape == (len(POSES), len(q), 2) and tr.xy.dtype == np.float32
    for t, pose in enumerate(POSES):
        exp = expected_pixels(q[:, 1:], POSES[0], pose)
        assert np.abs(tr.xy[t] - exp).max() < 0.01, t
    assert np.abs(tr.xy[1] - tr.xy[0]).max() > 1  # it really moved
    assert tr.visible.all()


def test_sim_online_equals_offline():
    aux = plane_episode()
    q = plane_queries(aux)
    off = SimPointTracker().track(None, q, aux)
    trk = SimPointTracker()
    trk.start(None, q, aux.at(0))
    for t in range(1, len(POSES)):
        xy, vis = trk.update(None, aux.at(t))
        np.testing.assert_allclose(xy, off.xy[t], atol=1e-5)
        np.testing.assert_array_equal(vis, off.visible[t])


def test_sim_occluder_hides_points():
    aux = plane_episode()
    q = plane_queries(aux, n=60)
    clean = SimPointTracker().track(None, q, aux)
    # Put an occluder 0.3 m in front of the plane over a box of pixels in frame 2.
    box = (slice(20, 44), slice(20, 44))
    aux.depth[2][box] -= 0.3
    tr = SimPointTracker().track(None, q, aux)
    xy = clean.xy[2]
    deep = (xy[:, 0] > 21) & (xy[:, 0] < 42) & (xy[:, 1] > 21) & (xy[:, 1] < 42)
    away = (xy[:, 0] < 19) | (xy[:, 0] > 44) | (xy[:, 1] < 19) | (xy[:, 1] > 44)
    assert deep.sum() >= 5 and away.sum() >= 5
    assert not tr.visible[2, deep].any()
    assert tr.visible[2, away].all()
    np.testing.assert_array_equal(tr.visible[[0, 1, 3]], clean.visible[[0, 1, 3]])
    # An occluder *behind* the surface changes nothing.
    aux.depth[2][box] += 0.6
    assert SimPointTracker().track(None, q, aux).visible[2].all()


def test_sim_out_of_frame_is_invisible():
    aux = plane_episode(POSES[:1] + [((1.5, 0.0, 0.0), (0, 0, 1), 0.0)])
    q = plane_queries(aux)
    tr = SimPointTracker().track(None, q, aux)
    assert tr.visible[0].all()
    assert (tr.xy[1, :, 0] > W - 1).all() and not tr.visible[1].any()


def test_sim_needs_aux_and_snaps_off_object_queries(caplog):
    aux = plane_episode()
    with pytest.raises(ValueError, match="needs simulator ground truth"):
        SimPointTracker().track(None, plane_queries(aux), None)
    q = np.array([[0, 1.0, 1.0]], np.float32)  # background corner
    with caplog.at_level(logging.WARNING):
        tr = SimPointTracker().track(None, q, aux)
    assert "snapped" in caplog.text
    assert aux.at(0).seg[int(round(tr.xy[0, 0, 1])), int(round(tr.xy[0, 0, 0]))] == OBJ_ID
    empty = FrameAux.stack([aux.at(0)])
    empty.seg[:] = 0
    with pytest.raises(ValueError, match="no object pixels"):
        SimPointTracker().track(None, q, empty)


def _adroit_aux(env, obs) -> FrameAux:
    ids = np.asarray(env.object_seg_ids)
    poses = getattr(env, "object_poses", None)
    poses = poses() if callable(poses) else poses
    if poses is None:  # the env has no pose API yet: read MuJoCo's body poses directly
        poses = np.c_[env.data.xpos[ids], env.data.xquat[ids]]
    return FrameAux(obs.depth, obs.seg, np.asarray(poses, float).reshape(len(ids), 7), ids,
                    env.camera_intrinsics(), env.camera_extrinsics())


def test_sim_on_adroit_door():
    """Open the door (two bodies: panel + latch); tracked points land on the rendered surface."""
    adroit = pytest.importorskip("kubm.sim.adroit")
    try:
        env = adroit.AdroitEnv("door")
        obs = env.reset(0)
    except Exception as e:  # no GL, no gymnasium-robotics, ...
        pytest.skip(f"Adroit door not available: {e!r}")
    if getattr(env, "object_poses", None) is None and not hasattr(env, "data"):
        pytest.skip("env exposes neither object_poses nor MuJoCo data")
    a0 = _adroit_aux(env, obs)
    rc = np.argwhere(a0.object_mask())
    q = np.c_[np.zeros(len(rc)), rc[:, 1], rc[:, 0]].astype(np.float32)
    hold = obs.qpos.copy()
    env.data.qpos[env.model.joint("door_hinge").qposadr[0]] += 0.5
    env.data.qpos[env.model.joint("latch").qposadr[0]] += 0.8
    env.data.qvel[:] = 0
    obs = env.step(hold)
    a1 = _adroit_aux(env, obs)
    env.close()
    tr = SimPointTracker().track(None, q, FrameAux.stack([a0, a1]))
    assert tr.visible[0].all()
    moved = np.linalg.norm(tr.xy[1] - tr.xy[0], axis=1)
    assert np.median(moved) > 3
    xy, vis = tr.xy[1], tr.visible[1]
    c, r = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    inside = (c >= 0) & (c < a1.depth.shape[1]) & (r >= 0) & (r < a1.depth.shape[0])
    assert inside.all()
    own = np.isin(a1.seg[r, c], a1.object_ids)
    assert vis[own].mean() > 0.97  # not hidden by its own surface
    assert own[vis].mean() > 0.9  # visible points land on object pixels (edges round off)
    # Visible points on object pixels sit on the rendered surface.
    body, p_body = SimPointTracker()._attach(q[:, 1:], a0)
    pose = a1.object_pose[body]
    world = np.einsum("nij,nj->ni", quat_to_matrix(pose[:, 3:]), p_body) + pose[:, :3]
    cam_z = (np.c_[world, np.ones(len(world))] @ a1.world_to_cam.T)[:, 2]
    assert np.median(np.abs(cam_z - a1.depth[r, c])[vis & own]) < 0.003


# ----------------------------------------------------------------------------- OpenCV LK
def texture(seed, n=256):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (n, n, 3)).astype(np.float32), (0, 0), 2.0)
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


def moving_texture(T=20, v=(1.3, 0.7)):
    """Frames of a texture translating by v px per frame; d[t] is the analytic shift."""
    tex = texture(0)
    d = np.arange(T)[:, None] * np.asarray(v)
    frames = np.stack([
        cv2.warpAffine(tex, np.float32([[1, 0, 60 - dx], [0, 1, 60 - dy]]), (96, 96),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        for dx, dy in d
    ])
    return frames, d


def lk_queries(n=60):
    rng = np.random.default_rng(1)
    return np.c_[np.zeros(n), rng.uniform(15, 55, (n, 2))].astype(np.float32)


def test_lk_follows_analytic_motion():
    frames, d = moving_texture()
    q = lk_queries()
    tr = OpenCVLKTracker().track(frames, q)
    gt = q[None, :, 1:] + d[:, None]
    err = np.linalg.norm(tr.xy - gt, axis=-1)
    assert np.median(err) < 0.2
    assert tr.visible.all()
    m = tracking_metrics(tr, Tracks(gt, np.ones(tr.visible.shape, bool), q))
    assert m["within_2px"] == 1.0 and m["visibility_agreement"] == 1.0 and m["n_frames"] == 20


def occluded_video():
    """Frames 10-13: a static patch (texture from elsewhere) overwrites a 30x30 box."""
    frames, d = moving_texture()
    frames[10:14, 40:70, 40:70] = frames[0, 0:30, 0:30]
    masks = np.ones(frames.shape[:3], bool)
    masks[10:14, 40:70, 40:70] = False
    return frames, d, masks


def test_lk_fb_check_flags_occluded_points():
    frames, d, _ = occluded_video()
    q = lk_queries()
    tr = OpenCVLKTracker(reseed=False).track(frames, q)
    g10 = q[:, 1:] + d[10]
    deep = np.all((g10 > 43) & (g10 < 66), axis=1)
    far = np.any(g10 < 30, axis=1)
    assert deep.sum() >= 5 and far.sum() >= 5
    assert (~tr.visible[10, deep]).mean() >= 0.8
    assert tr.visible[:, far].mean() >= 0.9
    # Lost points keep their last position and stay lost without re-seeding.
    lost = deep & ~tr.visible[10]
    np.testing.assert_array_equal(tr.xy[19, lost], tr.xy[9, lost])
    assert not tr.visible[14:, lost].any()


def test_lk_reseeds_inside_mask():
    frames, d, masks = occluded_video()
    q = lk_queries()
    tr = OpenCVLKTracker(reseed=True).track(frames, q, masks=masks)
    g10 = q[:, 1:] + d[10]
    deep = np.all((g10 > 43) & (g10 < 66), axis=1)
    assert (~tr.visible[10, deep]).mean() >= 0.8  # hidden while the occluder is there
    assert tr.visible[14:, deep].all()  # back once it is gone
    gt = q[None, :, 1:] + d[:, None]
    err = np.linalg.norm(tr.xy[14:, deep] - gt[14:, deep], axis=-1)
    assert np.median(err) < 0.5
    # The same masks through aux.seg / object_ids give the same tracks.
    aux = FrameAux(seg=masks.astype(np.int32) * 3, object_ids=np.array([3]))
    tr2 = OpenCVLKTracker(reseed=True).track(frames, q, aux)
    np.testing.assert_array_equal(tr2.xy, tr.xy)


def test_lk_online_equals_offline():
    frames, _, masks = occluded_video()
    q = lk_queries()
    off = OpenCVLKTracker().track(frames, q, masks=masks)
    trk = OpenCVLKTracker()
    trk.start(frames[0], q)
    for t in range(1, len(frames)):
        xy, vis = trk.update(frames[t], mask=masks[t])
        np.testing.assert_array_equal(xy, off.xy[t])
        np.testing.assert_array_equal(vis, off.visible[t])
    with pytest.raises(ValueError, match="t must be 0"):
        trk.start(frames[0], q + np.array([1, 0, 0], np.float32))


def test_metrics():
    gt = Tracks(np.zeros((2, 3, 2)), np.array([[1, 1, 0], [1, 0, 0]], bool), np.zeros((3, 3)))
    pred = Tracks(np.full((2, 3, 2), [3.0, 0.0]), np.array([[1, 1, 1], [1, 0, 0]], bool), np.zeros((3, 3)))
    pred.xy[0, 0] = [1.0, 0.0]
    m = tracking_metrics(pred, gt)
    assert m["median_px"] == 3.0 and m["within_2px"] == pytest.approx(1 / 3)
    assert m["visibility_agreement"] == pytest.approx(5 / 6)
    assert (m["n_points"], m["n_frames"], m["n_visible"]) == (3, 2, 3)


# ----------------------------------------------------------------------------- selection
WEIGHT_ENV = ("KUBM_COTRACKER_CKPT", "KUBM_WEIGHTS_DIR", "HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No checkpoint anywhere: empty HOME, no weight env vars."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in WEIGHT_ENV:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_explicit_cotracker_without_checkpoint_raises(no_weights):
    pytest.importorskip("cotracker")
    with pytest.raises(BackendUnavailable) as e:
        make_tracker("cotracker3", {"cotracker3": {"mode": "offline"}})
    msg = str(e.value)
    for place in ("$KUBM_COTRACKER_CKPT", "weights dir", "Hugging Face cache", "torch hub cache", "Fetch it with"):
        assert place in msg


def test_auto_without_weights_is_sim(no_weights, caplog):
    with caplog.at_level(logging.WARNING):
        trk = make_tracker("auto", {"cotracker3": {"checkpoint": None}, "sim": {"depth_tol": 0.02}})
    assert isinstance(trk, SimPointTracker) and trk.depth_tol == 0.02
    assert "auto -> sim" in caplog.text
    assert "checkpoint" in trk.describe()["auto_reason"]
    # "random" is for tests only: auto never takes it.
    assert isinstance(make_tracker("auto", {"cotracker3": {"checkpoint": "random"}}), SimPointTracker)


def test_factory_backends_and_errors():
    lk = make_tracker("opencv_lk", {"opencv_lk": {"win": 21, "levels": 2, "fb_thresh": 0.5}})
    assert lk.describe()["settings"] == {"win": 21, "levels": 2, "fb_thresh": 0.5, "reseed": True}
    assert make_tracker("sim", {}).describe()["backend"] == "sim"
    with pytest.raises(ValueError, match="unknown tracker backend"):
        make_tracker("raft", {})


# ----------------------------------------------------------------------------- CoTracker3
SMALL = {"checkpoint": "random", "model_resolution": [128, 128]}


@pytest.fixture(scope="module")
def small_video():
    frames, _ = moving_texture(T=16)
    frames = np.ascontiguousarray(frames[:, 16:80, 16:80])  # 64x64
    rng = np.random.default_rng(0)
    q = np.c_[np.zeros(16), rng.uniform(8, 56, (16, 2))].astype(np.float32)
    return frames, q


def test_cotracker_offline_random_small(small_video, caplog):
    pytest.importorskip("cotracker")
    frames, q = small_video
    with caplog.at_level(logging.WARNING):
        # window_len 8 instead of 60 (test speed: the offline model pads a clip to full windows).
        trk = make_tracker("cotracker3", {"cotracker3": {**SMALL, "mode": "offline", "window_len": 8}})
    assert "RANDOM weights" in caplog.text
    tr = trk.track(frames[:8], q)
    assert tr.xy.shape == (8, 16, 2) and tr.xy.dtype == np.float32
    assert tr.visible.shape == (8, 16) and tr.visible.dtype == bool
    assert np.isfinite(tr.xy).all()
    np.testing.assert_allclose(tr.xy[0], q[:, 1:], atol=1e-4)  # query frame answers the query
    d = trk.describe()
    assert d["checkpoint"] == d["checkpoint_sha256"] == "random"
    assert d["settings"]["model_resolution"] == [128, 128]
    assert trk._pred.interp_shape == (128, 128)


def test_cotracker_online_random_small(small_video):
    pytest.importorskip("cotracker")
    frames, q = small_video
    # window_len 8 (step 4) instead of 16 (step 8), for test speed.
    trk = make_tracker("cotracker3", {"cotracker3": {**SMALL, "mode": "online", "window_len": 8}})
    assert trk.step == 4
    trk.start(frames[0], q)
    lags = []
    for t in range(1, 10):
        xy, vis = trk.update(frames[t])
        assert xy.shape == (16, 2) and xy.dtype == np.float32
        assert vis.shape == (16,) and vis.dtype == bool
        lags.append(trk.lag)
        if t < 7:  # before the first full window: the query positions
            np.testing.assert_array_equal(xy, q[:, 1:])
    # The model runs once 2*step frames are in, then every step frames.
    assert lags == [1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert np.isfinite(xy).all()
    tr = trk.track(frames[:6], q)  # online mode, offline call: one partial window
    assert tr.xy.shape == (6, 16, 2) and tr.visible.shape == (6, 16)
    assert np.isfinite(tr.xy).all()


def test_cotracker_checkpoint_via_env_var(small_video, no_weights, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("cotracker")
    from cotracker.models.build_cotracker import build_cotracker

    ckdir = no_weights / "ck"
    ckdir.mkdir()
    sd = build_cotracker(None, offline=True, window_len=60).state_dict()  # as scaled_offline.pth
    torch.save(sd, ckdir / "scaled_offline.pth")
    monkeypatch.setenv("KUBM_COTRACKER_CKPT", str(ckdir))  # a directory: variant file inside
    trk = make_tracker("cotracker3", {"cotracker3": {"mode": "offline", "model_resolution": [128, 128]}})
    assert trk.describe()["checkpoint"] == str(ckdir / "scaled_offline.pth")
    assert len(trk.describe()["checkpoint_sha256"]) == 16
    key = next(iter(sd))
    assert torch.equal(trk._pred.model.state_dict()[key], sd[key])
    # With a real checkpoint on disk, auto picks CoTracker3.
    auto = make_tracker("auto", {"cotracker3": {"mode": "offline"}})
    assert auto.describe()["backend"] == "cotracker3" and "found" in auto.describe()["auto_reason"]
    if not torch.cuda.is_available():  # ... but not on a device it cannot use
        auto = make_tracker("auto", {"cotracker3": {"mode": "offline", "device": "cuda"}})
        assert isinstance(auto, SimPointTracker) and "CUDA" in auto.auto_reason
    # The config's `weights` map names checkpoints too (a backend's own `checkpoint` wins).
    monkeypatch.delenv("KUBM_COTRACKER_CKPT")
    w = make_tracker("cotracker3", {"weights": {"cotracker3_offline": str(ckdir / "scaled_offline.pth")}})
    assert w.describe()["checkpoint"] == str(ckdir / "scaled_offline.pth")
    # The offline file does not fit the online model (its time embedding is for 60 frames).
    monkeypatch.setenv("KUBM_COTRACKER_CKPT", str(ckdir / "scaled_offline.pth"))
    with pytest.raises(RuntimeError, match="does not fit"):
        make_tracker("cotracker3", {"cotracker3": {"mode": "online"}})


def test_cotracker_cuda_on_cpu_machine_raises():
    torch = pytest.importorskip("torch")
    pytest.importorskip("cotracker")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        make_tracker("cotracker3", {"cotracker3": {**SMALL, "device": "cuda"}})
