"""Query sampling inside the object's mask."""

import cv2
import numpy as np
import pytest

from kubm.perception.queries import sample_queries


def disc(S=64, c=(30, 24), r=12):
    yy, xx = np.mgrid[:S, :S]
    return (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r


def eroded(mask, px):
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def pixels(q):
    return np.rint(q[:, 2]).astype(int), np.rint(q[:, 1]).astype(int)  # rows, cols


def test_inside_eroded_mask_and_spread():
    m = disc()
    q = sample_queries(m, n=100, seed=0, erode_px=2, frame=5)
    assert q.shape == (100, 3) and q.dtype == np.float32
    assert (q[:, 0] == 5).all()
    r, c = pixels(q)
    assert eroded(m, 2)[r, c].all()
    assert len(set(zip(r, c))) == 100  # 100 distinct pixels from a ~300 px pool
    # Spread: points cover the disc, not one corner of it.
    assert np.ptp(q[:, 1]) > 15 and np.ptp(q[:, 2]) > 15


def test_xy_is_column_row():
    m = np.zeros((20, 40), bool)
    m[2:5, 30:38] = True  # wide, short box on the right
    q = sample_queries(m, n=10, erode_px=0)
    assert (q[:, 1] > 29).all() and (q[:, 2] < 5.5).all()


def test_deterministic_by_seed():
    m = disc()
    a = sample_queries(m, n=64, seed=3)
    np.testing.assert_array_equal(a, sample_queries(m, n=64, seed=3))
    assert not np.array_equal(a, sample_queries(m, n=64, seed=4))


def test_tiny_mask_still_gives_n_points():
    m = np.zeros((32, 32), bool)
    m[10:12, 20:22] = True  # 4 px: erosion empties it, so the raw mask is used
    q = sample_queries(m, n=256, seed=1, erode_px=2)
    assert q.shape == (256, 3)
    r, c = pixels(q)
    assert m[r, c].all()
    assert len(np.unique(q[:, 1:], axis=0)) == 256  # jitter keeps repeats distinct
    assert len(set(zip(r, c))) == 4  # every pixel used


def test_empty_mask_raises():
    with pytest.raises(ValueError, match="empty"):
        sample_queries(np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        sample_queries(np.ones((2, 16, 16), bool))
