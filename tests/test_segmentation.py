"""Segmenters: sim ground truth, SAM 2 with random weights, SAM 3 adapter on a fake predictor,
checkpoint errors and backend selection. No weights, no GPU, no network."""

import hashlib
import os

import cv2
import numpy as np
import pytest

from kubm.perception.segmentation import (
    BackendUnavailable,
    Sam2Segmenter,
    Sam3Segmenter,
    SegPrompt,
    Segmenter,
    SimSegmenter,
    make_segmenter,
    mask_iou,
)

ENV_VARS = (
    "KUBM_SAM2_CKPT", "KUBM_SAM3_CKPT", "KUBM_WEIGHTS_DIR",
    "HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME",
)
SQUARE_RGB = (220, 60, 40)


@pytest.fixture(autouse=True)
def no_weights(tmp_path, monkeypatch):
    """Empty HOME and every weight location pointed at empty dirs: nothing real leaks in."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("HOME", "home"), ("KUBM_WEIGHTS_DIR", "weights"), ("HF_HOME", "hf"),
                     ("TORCH_HOME", "torch")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def moving_square(T=6, S=64, size=16):
    """A coloured square moving right 2 px a frame on grey; returns frames and GT masks."""
    frames = np.full((T, S, S, 3), 40, np.uint8)
    gt = np.zeros((T, S, S), bool)
    for t in range(T):
        x = 10 + 2 * t
        frames[t, 20:20 + size, x:x + size] = SQUARE_RGB
        gt[t, 20:20 + size, x:x + size] = True
    return frames, gt


# --------------------------------------------------------------------------- helpers / sim


def test_mask_iou():
    a = np.zeros((3, 4, 4), bool)
    b = a.copy()
    a[0, :2] = True  # 8 px
    b[0, :1] = True  # 4 px inside a
    a[1, 0, 0] = True  # disjoint from b[1]
    b[1, 3, 3] = True
    np.testing.assert_allclose(mask_iou(a, b), [0.5, 0.0, 1.0])  # frame 2: both empty
    assert mask_iou(a[0], b[0]).shape == (1,)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, b[:2])


def test_sim_exact_masks():
    rng = np.random.default_rng(0)
    seg = rng.choice(np.array([0, 3, 5, 7], np.uint8), size=(4, 16, 20))
    frames = np.zeros((4, 16, 20, 3), np.uint8)
    s = SimSegmenter([5, 7])
    assert isinstance(s, Segmenter)
    m = s.segment(frames, SegPrompt(), seg=seg)
    assert m.dtype == bool and m.shape == (4, 16, 20)
    np.testing.assert_array_equal(m, (seg == 5) | (seg == 7))
    np.testing.assert_array_equal(s.segment_from_ids(seg, [3]), seg == 3)
    assert s.describe()["backend"] == "sim"


def test_sim_errors():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="seg="):
        SimSegmenter([1]).segment(frames, SegPrompt())
    with pytest.raises(ValueError, match="does not match"):
        SimSegmenter([1]).segment(frames, SegPrompt(), seg=np.zeros((2, 8, 9), np.uint8))
    with pytest.raises(ValueError, match="object ids"):
        SimSegmenter().segment(frames, SegPrompt(), seg=np.zeros((2, 8, 8), np.uint8))


# --------------------------------------------------------------------------- SAM 2


@pytest.fixture(scope="module")
def sam2_random():
    pytest.importorskip("sam2")
    return Sam2Segmenter(model="tiny", image_size=256, checkpoint="random", device="cpu")


def test_sam2_random_weights_shapes(sam2_random):
    import torch

    threads = torch.get_num_threads()
    frames, _ = moving_square(T=4)
    # Prompt on a later frame: propagates forwards and backwards, so every frame is produced.
    masks = sam2_random.segment(frames, SegPrompt(frame=1, box=(12, 20, 28, 36),
                                                  points=np.array([[20.0, 28.0]])))
    assert masks.shape == (4, 64, 64) and masks.dtype == bool
    assert torch.get_num_threads() == threads  # the caller's thread setting is left alone
    d = sam2_random.describe()
    assert d["checkpoint"] == "random" and d["checkpoint_sha256"] == "random"
    assert d["image_size"] == 256 and d["model"] == "sam2.1_hiera_tiny"


def test_sam2_random_warns_loudly(caplog):
    pytest.importorskip("sam2")
    with caplog.at_level("WARNING"):
        Sam2Segmenter(checkpoint="random", image_size=256)
    assert "RANDOM weights" in caplog.text and "tests only" in caplog.text.lower()


def test_sam2_prompt_errors(sam2_random):
    frames, _ = moving_square(T=2)
    with pytest.raises(ValueError, match="mask, box or points"):
        sam2_random.segment(frames, SegPrompt(text="red square"))
    with pytest.raises(ValueError, match="outside"):
        sam2_random.segment(frames, SegPrompt(frame=5, box=(0, 0, 4, 4)))
    with pytest.raises(ValueError, match="uint8"):
        sam2_random.segment(frames.astype(np.float32), SegPrompt(box=(0, 0, 4, 4)))


def test_sam2_checkpoint_through_env_var(sam2_random, tmp_path, monkeypatch, capsys):
    import torch

    # The loader reads torch.load(path)["model"] and loads it strictly.
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam2_random.predictor.state_dict()}, ckpt)
    monkeypatch.setenv("KUBM_SAM2_CKPT", str(ckpt))
    seg = make_segmenter("sam2", {"sam2": {"image_size": 256}, "device": "cpu"})
    d = seg.describe()
    assert d["checkpoint"] == str(ckpt)
    assert d["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
    frames, gt = moving_square(T=2)
    m = seg.segment(frames, SegPrompt(mask=gt[0]))
    assert m.shape == (2, 64, 64) and m.dtype == bool
    # With the checkpoint resolvable and no GPU, auto picks sam2 and says why not sam3.
    auto = make_segmenter("auto", {"sam2": {"image_size": 256}, "device": "cpu"})
    assert auto.name == "sam2"
    assert "sam3" in auto.describe()["selection"]["skipped"]
    assert "segment backend: sam2" in capsys.readouterr().err


def test_sam2_missing_checkpoint_lists_places(no_weights):
    pytest.importorskip("sam2")
    with pytest.raises(BackendUnavailable) as e:
        make_segmenter("sam2", {"device": "cpu"})
    msg = str(e.value)
    assert "sam2.1_hiera_tiny.pt" in msg
    for place in ("$KUBM_SAM2_CKPT", "weights dir", "Hugging Face cache", "torch hub cache",
                  str(no_weights / "weights")):
        assert place in msg
    assert "Fetch it with" in msg


def test_sam2_bad_configured_path_is_an_error(tmp_path):
    pytest.importorskip("sam2")
    with pytest.raises(BackendUnavailable, match="config path"):
        Sam2Segmenter(checkpoint=str(tmp_path / "nope.pt"))


def test_weights_section_names_the_checkpoint(tmp_path):
    pytest.importorskip("sam2")
    missing = str(tmp_path / "elsewhere.pt")
    with pytest.raises(BackendUnavailable, match="elsewhere.pt"):
        make_segmenter("sam2", {"weights": {"sam2.1_hiera_tiny": missing}, "device": "cpu"})


def test_sam2_cuda_on_cpu_machine():
    pytest.importorskip("sam2")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailable, match="cuda"):
        Sam2Segmenter(checkpoint="random", device="cuda")


# --------------------------------------------------------------------------- SAM 3


class FakeSam3:
    """Mimics Sam3VideoPredictor's request API and response shapes (sam3/model/
    sam3_video_predictor.py + Sam3VideoInference._postprocess_output): per frame
    out_obj_ids int64 [N], out_probs float32 [N], out_boxes_xywh float32 [N,4] (normalised),
    out_binary_masks bool [N,H,W]. Object 3 is the true square; object 8 a distractor."""

    def __init__(self, gt, distractor_prob=0.3):
        self.gt, self.distractor_prob = gt, distractor_prob
        self.requests, self.sessions = [], {}

    def handle_request(self, request):
        self.requests.append(dict(request))
        kind = request["type"]
        if kind == "start_session":
            names = sorted(os.listdir(request["resource_path"]))
            first = cv2.imread(os.path.join(request["resource_path"], names[0]))
            self.sessions["s1"] = self.started = {"names": names, "first_bgr": first, "prompt": None}
            return {"session_id": "s1"}
        if kind == "add_prompt":
            s = self.sessions[request["session_id"]]
            s["prompt"] = request["frame_index"]
            return {"frame_index": request["frame_index"], "outputs": self._outputs(request["frame_index"])}
        if kind == "close_session":
            self.sessions.pop(request["session_id"], None)
            return {"is_success": True}
        raise RuntimeError(f"invalid request type: {kind}")

    def handle_stream_request(self, request):
        self.requests.append(dict(request))
        assert request["type"] == "propagate_in_video"
        f0 = self.sessions[request["session_id"]]["prompt"]
        direction = request.get("propagation_direction", "both")
        order = []
        if direction in ("both", "forward"):
            order += list(range(f0, len(self.gt)))
        if direction in ("both", "backward"):
            order += list(range(f0 - 1, -1, -1))
        for t in order:
            yield {"frame_index": t, "outputs": self._outputs(t)}

    def _outputs(self, t):
        H, W = self.gt.shape[1:]
        distractor = np.zeros((H, W), bool)
        distractor[50:60, 50:60] = True
        masks = np.stack([self.gt[t], distractor])
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min() / W, ys.min() / H, (xs.max() - xs.min() + 1) / W, (ys.max() - ys.min() + 1) / H])
        return {"out_obj_ids": np.array([3, 8], np.int64),
                "out_probs": np.array([0.9, self.distractor_prob], np.float32),
                "out_boxes_xywh": np.array(boxes, np.float32),
                "out_binary_masks": masks,
                "frame_stats": None}


def test_sam3_adapter_against_fake_predictor():
    frames, gt = moving_square(T=7)
    fake = FakeSam3(gt)
    seg = Sam3Segmenter(predictor=fake)
    masks = seg.segment(frames, SegPrompt(frame=2, text="red square"), seg=None)  # seg: ignored
    assert masks.shape == gt.shape and masks.dtype == bool
    np.testing.assert_array_equal(masks, gt)  # best object on every frame, both directions
    kinds = [r["type"] for r in fake.requests]
    assert kinds == ["start_session", "add_prompt", "propagate_in_video", "close_session"]
    assert fake.requests[1]["text"] == "red square" and fake.requests[1]["frame_index"] == 2
    assert not fake.sessions  # closed
    d = seg.describe()
    assert d["backend"] == "sam3" and d["checkpoint_sha256"] == "injected"


def test_sam3_frames_written_as_rgb_jpegs():
    frames, gt = moving_square(T=3)
    fake = FakeSam3(gt)
    Sam3Segmenter(predictor=fake).segment(frames, SegPrompt(text="red square"))
    assert fake.started["names"] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    b, g, r = fake.started["first_bgr"][28, 18].astype(int)  # inside the square; OpenCV reads BGR
    assert r > 180 and b < 90


def test_sam3_union_selection():
    frames, gt = moving_square(T=4)
    seg = Sam3Segmenter(predictor=FakeSam3(gt, distractor_prob=0.6), select="union")
    masks = seg.segment(frames, SegPrompt(text="red square"))
    assert masks[:, 50:60, 50:60].all() and (masks & gt).sum() == gt.sum()
    seg = Sam3Segmenter(predictor=FakeSam3(gt, distractor_prob=0.4), select="union")
    np.testing.assert_array_equal(seg.segment(frames, SegPrompt(text="x")), gt)


def test_sam3_needs_text():
    frames, gt = moving_square(T=2)
    with pytest.raises(ValueError, match="text"):
        Sam3Segmenter(predictor=FakeSam3(gt)).segment(frames, SegPrompt(box=(0, 0, 4, 4)))


def test_sam3_on_cpu_machine_is_unavailable():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        Sam3Segmenter()
    with pytest.raises(BackendUnavailable, match="sam2 or sim"):
        make_segmenter("sam3", {"device": "auto"})


# --------------------------------------------------------------------------- selection


def test_auto_with_nothing_available_is_sim(capsys):
    seg = make_segmenter("auto", {"object_ids": [4]})
    assert seg.name == "sim" and seg.object_ids == [4]
    sel = seg.describe()["selection"]
    assert sel["requested"] == "auto" and sel["chosen"] == "sim"
    assert set(sel["skipped"]) == {"sam3", "sam2"}
    assert all(sel["skipped"].values())
    err = capsys.readouterr().err
    assert "segment backend: sim" in err and "skipped sam3" in err and "skipped sam2" in err


def test_auto_never_uses_random_weights(capsys):
    seg = make_segmenter("auto", {"sam2": {"checkpoint": "random"}})
    assert seg.name == "sim"
    assert "random" in seg.selection["skipped"]["sam2"]


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown segment backend"):
        make_segmenter("sam4", {})
