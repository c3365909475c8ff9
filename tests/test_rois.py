"""Masks, seed-point grids, flips and the ROIs.h5 round trip."""

import re

import h5py
import numpy as np
import pytest

from facerhythm_core.errors import ROIError
from facerhythm_core.rois import (
    ROISet,
    build_session_rois,
    flip_lr,
    load_rois_h5,
    make_points,
    polygon_mask,
    resolve_tracking_mask,
    rois_from_polygons,
    save_rois_h5,
)


def test_polygon_mask_rectangle():
    m = polygon_mask([[10, 5], [19, 5], [19, 14], [10, 14]], (30, 40))
    assert m.dtype == bool and m.shape == (30, 40)
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 19, 5, 14)
    assert m.sum() == 100


def test_polygon_mask_errors():
    with pytest.raises(ROIError, match="outside the 40x30 frame"):
        polygon_mask([[10, 5], [45, 5], [19, 14]], (30, 40), name="cheek")
    with pytest.raises(ROIError, match="at least 3"):
        polygon_mask([[1, 1], [5, 5]], (30, 40))
    with pytest.raises(ROIError, match="finite"):
        polygon_mask([[1, 1], [5, np.nan], [3, 3]], (30, 40))


def test_make_points_grid_matches_reference_rules():
    m = np.zeros((50, 60), bool)
    m[10:31, 5:26] = True  # y 10..30, x 5..25
    pts = make_points(m, point_spacing=10)
    # anchored at the bbox corner, candidates < max (exclusive), x-major order
    expected = [(x, y) for x in (5, 15) for y in (10, 20)]
    assert [tuple(p) for p in pts.tolist()] == expected
    assert pts.dtype == np.float32


def test_make_points_intersection_and_errors():
    a = np.zeros((40, 40), bool)
    a[:, :20] = True
    b = np.zeros((40, 40), bool)
    b[:, 10:] = True
    pts = make_points([a, b], point_spacing=3)
    assert (pts[:, 0] >= 10).all() and (pts[:, 0] < 20).all()
    c = np.zeros((40, 40), bool)
    c[:, 30:] = True
    with pytest.raises(ROIError, match="empty"):
        make_points([a, c], 3)
    tiny = np.zeros((40, 40), bool)
    tiny[5, 5] = True  # bbox of one pixel: no candidate below the exclusive max
    with pytest.raises(ROIError, match="no seed point"):
        make_points(tiny, 3)


def test_flip_lr_keeps_points_on_masks():
    rois = rois_from_polygons({"a": [[3, 4], [12, 4], [12, 9], [3, 9]]}, (20, 30))
    rois.point_positions = make_points(rois.masks["a"], 2)
    f = flip_lr(rois)
    w = 30
    assert np.array_equal(f.masks["a"], rois.masks["a"][:, ::-1])
    xs = f.point_positions[:, 0].astype(int)
    ys = f.point_positions[:, 1].astype(int)
    assert f.masks["a"][ys, xs].all()  # every flipped point lies in the flipped mask
    assert np.allclose(f.point_positions[:, 0], w - 1 - rois.point_positions[:, 0])
    back = flip_lr(f)
    assert np.array_equal(back.point_positions, rois.point_positions)
    assert np.array_equal(back.masks["a"], rois.masks["a"])


def test_roundtrip_and_reference_layout(tmp_path):
    rois = rois_from_polygons(
        {"ROI_0": [[2, 2], [20, 2], [20, 15]], "ROI_1": [[1, 1], [25, 1], [25, 18], [1, 18]]},
        (20, 30),
        example_image=np.full((20, 30, 3), 7, np.uint8),
    )
    rois.point_positions = make_points(rois.masks["ROI_0"], 3)
    p = tmp_path / "ROIs.h5"
    save_rois_h5(p, rois)
    back = load_rois_h5(p)
    assert back.names == ["ROI_0", "ROI_1"]
    for k in rois.masks:
        assert np.array_equal(back.masks[k], rois.masks[k])
        assert np.allclose(back.polygons[k], rois.polygons[k])
    assert np.array_equal(back.point_positions, rois.point_positions)
    assert np.array_equal(back.example_image, rois.example_image)
    with h5py.File(p) as f:  # the reference's names
        assert set(f) >= {"mask_images", "roi_points", "point_positions", "exampleImage"}


def test_load_reference_quirks(tmp_path):
    """Float example image in [0, 1] (as the reference re-saves it); masks sorted naturally."""
    p = tmp_path / "ref.h5"
    with h5py.File(p, "w") as f:
        for i in (0, 2, 10):
            m = np.zeros((8, 9), bool)
            m[i % 8, :] = True
            f[f"mask_images/mask_{i}"] = m
        f["exampleImage"] = np.full((8, 9, 3), 0.5, np.float32)
    r = load_rois_h5(p)
    assert r.names == ["mask_0", "mask_2", "mask_10"]
    assert r.example_image.dtype == np.uint8 and int(r.example_image[0, 0, 0]) == 128
    assert r.point_positions is None


def test_load_errors(tmp_path):
    with pytest.raises(ROIError, match="not found"):
        load_rois_h5(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(ROIError, match="not a readable HDF5"):
        load_rois_h5(bad)
    nomask = tmp_path / "nomask.h5"
    with h5py.File(nomask, "w") as f:
        f["point_positions"] = np.zeros((3, 2), np.float32)
    with pytest.raises(ROIError, match="mask_images"):
        load_rois_h5(nomask)


def test_tracking_mask_modes():
    rois = rois_from_polygons(
        {"a": [[2, 2], [10, 2], [10, 10], [2, 10]], "b": [[6, 6], [18, 6], [18, 18], [6, 18]]}, (20, 20)
    )
    union = resolve_tracking_mask(rois, None)
    assert union.sum() == (rois.masks["a"] | rois.masks["b"]).sum()
    assert resolve_tracking_mask(rois, []).all()
    assert np.array_equal(resolve_tracking_mask(rois, ["a", 1]), rois.masks["a"] & rois.masks["b"])
    with pytest.raises(ROIError, match="index 5"):
        resolve_tracking_mask(rois, [5])


def test_build_session_rois(tmp_path):
    polys = {"face": [[5, 5], [50, 5], [50, 40], [5, 40]]}
    img = np.zeros((48, 64, 3), np.uint8)
    rois, mask = build_session_rois("config:x", (48, 64), polygons=polys, point_spacing=5, point_rois=["face"])
    assert len(rois.point_positions) > 0 and mask.sum() == rois.masks["face"].sum()
    f = tmp_path / "r.h5"
    save_rois_h5(f, ROISet(masks={"m": np.ones((10, 10), bool)}, example_image=img[:10, :10]))
    with pytest.raises(ROIError, match="10x10 masks but the session's videos are 64x48"):
        build_session_rois(str(f), (48, 64), roi_file=str(f))
    with pytest.raises(ROIError, match="outside"):
        build_session_rois("config:x", (48, 64), polygons={"a": [[5, 5], [70, 5], [50, 40]]})
    f2 = tmp_path / "pts.h5"
    save_rois_h5(
        f2,
        ROISet(
            masks={"m": np.ones((48, 64), bool)},
            example_image=img,
            point_positions=np.array([[10, 10], [70, 3]], np.float32),
        ),
    )
    with pytest.raises(ROIError, match="outside"):
        build_session_rois(str(f2), (48, 64), roi_file=str(f2))


def test_empty_mask_in_file_is_a_clear_error(tmp_path):
    f = tmp_path / "empty.h5"
    save_rois_h5(f, ROISet(masks={"m": np.zeros((30, 40), bool)}, example_image=np.zeros((30, 40, 3), np.uint8)))
    with pytest.raises(ROIError, match="empty"):
        build_session_rois(str(f), (30, 40), roi_file=str(f), point_rois=[0])


# --------------------------------------------------------------- parts of an ROI file


def _reference_file(path, h=24, w=32, **parts):
    """An ROIs.h5 in the reference layout with two masks; ``parts`` replace or add datasets."""
    m0 = np.zeros((h, w), bool)
    m0[4:20, 4:28] = True
    data = {
        "mask_images/mask_0": m0,
        "mask_images/mask_1": m0.copy(),
        "roi_points/ROI_0": np.array([[4, 4], [27, 4], [27, 19], [4, 19]], np.float32),
        "roi_points/ROI_1": np.array([[4, 4], [27, 4], [27, 19]], np.float32),
        "point_positions": np.array([[6, 6], [10, 8]], np.float32),
        "num_points": 2,
        "exampleImage": np.full((h, w, 3), 9, np.uint8),
    }
    data.update(parts)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f[k] = v
    return path


def test_reference_file_with_every_part_loads(tmp_path):
    r = load_rois_h5(_reference_file(tmp_path / "ok.h5"))
    assert r.names == ["mask_0", "mask_1"] and list(r.polygons) == ["ROI_0", "ROI_1"]
    assert r.point_positions.tolist() == [[6, 6], [10, 8]] and r.example_image.shape == (24, 32, 3)
    # a float mask of 0/1 and a grey float image in [0, 1] are read as before
    m = np.zeros((24, 32), np.float64)
    m[5:9, 5:9] = 1.0
    r = load_rois_h5(
        _reference_file(tmp_path / "f.h5", **{"mask_images/mask_1": m, "exampleImage": np.full((24, 32), 0.5)})
    )
    assert r.masks["mask_1"].sum() == 16 and r.example_image.shape == (24, 32, 3)
    assert int(r.example_image[0, 0, 0]) == 128


@pytest.mark.parametrize(
    "parts,msg",
    [
        (
            {"exampleImage": np.zeros((48, 64, 3), np.uint8)},
            r"exampleImage is 64x48 but the masks in mask_images are 32x24",
        ),
        ({"exampleImage": np.zeros((24, 32, 2), np.uint8)}, r"exampleImage must be an \(H, W\) or \(H, W, 3\)"),
        (
            {"exampleImage": np.full((24, 32), np.nan, np.float32)},
            r"exampleImage holds 768 NaN or infinite value\(s\), the first at index \[0, 0\]",
        ),
        (
            {"point_positions": np.array([[6, 6], [np.nan, 8]], np.float32)},
            r"point_positions holds 1 NaN or infinite value\(s\), the first at index \[1, 0\]; seed points",
        ),
        (
            {"point_positions": np.array([[6, np.inf], [7, 8]], np.float64)},
            r"point_positions holds 1 NaN or infinite value\(s\), the first at index \[0, 1\]",
        ),
        (
            {"point_positions": np.array([[b"6", b"x"], [b"7", b"8"]])},
            r"point_positions holds \|S1 values, not numbers",
        ),
        ({"num_points": 5}, r"num_points says \[5\] but point_positions holds 2 points"),
        (
            {"mask_images/mask_1": np.where(np.eye(24, 32) > 0, np.nan, 0.0)},
            r"mask_images/mask_1 holds 24 NaN or infinite value\(s\).*a mask holds true/false or 0/1",
        ),
        (
            {"mask_images/mask_1": np.zeros((24, 30), bool)},
            r"masks have different shapes \(mask_0 32x24, mask_1 30x24\)",
        ),
        (
            {"roi_points/ROI_2": np.zeros((3, 2), np.float32)},
            r"has 3 polygon\(s\) in roi_points but 2 mask\(s\) in mask_images",
        ),
        ({"roi_points/ROI_1": np.array([[1, 2], [np.nan, 3], [4, 5]], np.float32)}, r"roi_points/ROI_1 holds 1 NaN"),
        ({"roi_points/ROI_1": np.zeros((3, 3), np.float32)}, r"roi_points/ROI_1 must be \(V, 2\)"),
    ],
)
def test_inconsistent_or_non_finite_parts_named(tmp_path, parts, msg):
    p = _reference_file(tmp_path / "bad.h5", **parts)
    with pytest.raises(ROIError, match=rf"ROI file {re.escape(str(p))}: .*{msg}|ROI file {re.escape(str(p))} {msg}"):
        load_rois_h5(p)


def test_group_where_a_dataset_belongs(tmp_path):
    p = _reference_file(tmp_path / "g.h5", point_positions=None)
    with h5py.File(p, "a") as f:
        f.create_group("point_positions").create_dataset("x", data=[1.0])
    with pytest.raises(ROIError, match=r"point_positions is a group, not a dataset"):
        load_rois_h5(p)


def test_build_session_rois_checks_the_file_against_the_video(tmp_path):
    p = _reference_file(tmp_path / "r.h5")
    rois, mask = build_session_rois(str(p), (24, 32), roi_file=str(p))
    assert rois.point_positions.tolist() == [[6, 6], [10, 8]] and mask.any()
    with pytest.raises(ROIError, match=r"32x24 masks but the session's videos are 64x48"):
        build_session_rois(str(p), (48, 64), roi_file=str(p))
