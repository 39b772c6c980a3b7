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


def test_ordered_queries_put_index_k_on_the_same_part_of_the_object():
    """Moving and scaling the object moves point k with it: after undoing the shift and
    scale, every index lands within a pixel or two of where it was."""
    from kubm.perception.queries import ordered_queries

    a = ordered_queries(disc(S=96, c=(30, 30), r=14), n=64, seed=0, erode_px=0)
    b = ordered_queries(disc(S=96, c=(60, 50), r=14), n=64, seed=1, erode_px=0)
    c = ordered_queries(disc(S=96, c=(40, 40), r=21), n=64, seed=2, erode_px=0)
    shift = b[:, 1:] - a[:, 1:] - np.array([30, 20])
    assert np.abs(shift).max() < 1.0
    scaled = np.abs((c[:, 1:] - 40) / 1.5 - (a[:, 1:] - 30))  # in units of the small disc (r 14 px)
    assert scaled.max() < 3.0 and np.median(scaled) < 1.0
    # the farthest-point samples, even in raster order, do not have this property
    fa = sample_queries(disc(S=96, c=(30, 30), r=14), n=64, seed=0, erode_px=0)
    fb = sample_queries(disc(S=96, c=(60, 50), r=14), n=64, seed=1, erode_px=0)
    order = lambda q: q[np.lexsort((q[:, 1], q[:, 2]))]  # noqa: E731
    assert np.abs(order(fb)[:, 1:] - order(fa)[:, 1:] - np.array([30, 20])).max() > 10.0


def test_ordered_queries_inside_mask_and_tiny_mask():
    from kubm.perception.queries import ordered_queries

    m = disc()
    q = ordered_queries(m, n=100, seed=0, erode_px=2, frame=3)
    assert q.shape == (100, 3) and (q[:, 0] == 3).all()
    r, c = pixels(q)
    assert eroded(m, 2)[r, c].all()
    tiny = np.zeros((32, 32), bool)
    tiny[10:12, 20:22] = True
    q = ordered_queries(tiny, n=256, seed=1)
    r, c = pixels(q)
    assert q.shape == (256, 3) and tiny[r, c].all()
    np.testing.assert_array_equal(ordered_queries(m, n=64, seed=3), ordered_queries(m, n=64, seed=3))
