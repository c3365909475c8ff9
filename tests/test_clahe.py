"""Our CLAHE must equal OpenCV's pixel for pixel."""

import cv2
import numpy as np
import pytest

from facerhythm_core.clahe import HAVE_NUMBA, Clahe

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is a dependency; this checks its kernels")


def _image(rng, h, w, kind):
    img = (rng.random((h, w)) * 256).astype(np.uint8)
    if kind == "smooth":
        img = cv2.GaussianBlur(img, (0, 0), 3)
    elif kind == "masked":  # zeros outside a region, as the tracker's masked frames
        img[rng.random((h, w)) < 0.5] = 0
        img[: h // 3] = 0
    elif kind == "constant":
        img[:] = int(rng.integers(0, 256))
    elif kind == "extremes":
        img = np.where(rng.random((h, w)) < 0.5, 0, 255).astype(np.uint8)
    return img


@pytest.mark.parametrize("seed", range(6))
def test_equals_opencv_on_random_configurations(seed):
    rng = np.random.default_rng(seed)
    cv2.setNumThreads(1)
    kinds = ["noise", "smooth", "masked", "constant", "extremes"]
    for trial in range(25):
        h, w = int(rng.integers(8, 400)), int(rng.integers(8, 500))
        gx, gy = int(rng.integers(1, min(160, w) + 1)), int(rng.integers(1, min(160, h) + 1))
        clip = float(rng.choice([0.0, 0.5, 1.0, 2.0, 4.0, 40.0, 300.0]))
        img = _image(rng, h, w, kinds[trial % len(kinds)])
        want = cv2.createCLAHE(clipLimit=clip, tileGridSize=(gx, gy)).apply(img)
        got = Clahe(clip, (gx, gy)).apply(img)
        assert got.dtype == np.uint8 and got.shape == img.shape
        diff = int(np.count_nonzero(got != want))
        assert diff == 0, f"{diff} pixels differ for {w}x{h}, grid {gx}x{gy}, clip {clip}"


def test_tracker_geometry_and_reuse():
    # the tracker's case: 150 x 150 tiles on a 640 x 480 frame (padded to 750 x 600),
    # one instance reused over frames, writing into a given output
    rng = np.random.default_rng(7)
    c = Clahe(40.0, (150, 150))
    assert c.engine == "numba"
    ref = cv2.createCLAHE(clipLimit=40.0, tileGridSize=(150, 150))
    out = np.empty((480, 640), np.uint8)
    for kind in ["smooth", "masked", "noise"]:
        img = _image(rng, 480, 640, kind)
        assert c.apply(img, dst=out) is out
        assert np.array_equal(out, ref.apply(img))
    # a strided view as input
    big = _image(rng, 600, 800, "smooth")
    view = big[50:530, 60:700]
    assert np.array_equal(c.apply(view), ref.apply(np.ascontiguousarray(view)))


def test_opencv_engine_and_bad_input():
    img = _image(np.random.default_rng(1), 60, 80, "smooth")
    a = Clahe(2.0, (8, 8), engine="opencv")
    assert a.engine == "opencv"
    assert np.array_equal(a.apply(img), Clahe(2.0, (8, 8)).apply(img))
    with pytest.raises(ValueError, match="2-D uint8"):
        Clahe(2.0, (8, 8)).apply(img.astype(np.float32))
    # a grid finer than the image (tiles of one pixel after OpenCV's padding)
    want = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(100, 8)).apply(img)
    assert np.array_equal(Clahe(2.0, (100, 8)).apply(img), want)
    with pytest.raises(ValueError, match="engine"):
        Clahe(2.0, (8, 8), engine="gpu")
