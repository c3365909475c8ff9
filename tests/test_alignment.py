"""Multi-session ROI transfer: reference images, registration, quality check, warping."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from facerhythm_core import alignment as al
from facerhythm_core import reference_image as ri
from facerhythm_core import registration as rg
from facerhythm_core import warps as wp
from facerhythm_core.demo import face_texture
from facerhythm_core.errors import ConfigError, ROIError
from facerhythm_core.rois import rois_from_polygons

REPO = Path(__file__).resolve().parents[1]
H, W = 120, 160


def affine(deg=0.0, scale=1.0, shift=(0.0, 0.0), center=((W - 1) / 2, (H - 1) / 2)):
    """3x3 map: rotate by deg and scale about center, then shift (template -> moving)."""
    a = np.deg2rad(deg)
    m = np.eye(3)
    m[:2, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.asarray(center, float)
    m[:2, 2] = c + np.asarray(shift, float) - m[:2, :2] @ c
    return m


def moved(image, m):
    """The image as a camera sees it after the content moved by m (independent of warps.py)."""
    return cv2.warpPerspective(
        image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def smooth_noise(seed, shape=(H, W), sigma=2.0):
    n = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return cv2.GaussianBlur(n, (0, 0), sigma)


@pytest.fixture(scope="module")
def face():
    return (face_texture(H, W, seed=3) / 255.0).astype(np.float32)


PROBE = np.array([[30.0, 25.0], [130.0, 95.0], [80.0, 60.0], [40.0, 100.0]])


def max_point_error(reg, truth):
    return np.abs(wp.warp_points(PROBE, reg) - wp.warp_points(PROBE, wp.Registration(truth))).max()


def angle_deg(m):
    return np.rad2deg(np.arctan2(m[1, 0], m[0, 0]))


# --------------------------------------------------------------------------- registration

SHIFT = affine(shift=(3.3, -2.6))
ROTATION = affine(deg=4.0, shift=(2.0, 1.0))
SCALE = affine(deg=2.0, scale=1.05, shift=(1.5, -1.0))


@pytest.mark.parametrize(
    "method,constraint,truth",
    [
        ("phase_correlation", "translation", SHIFT),
        ("ecc", "translation", SHIFT),
        ("ecc", "euclidean", SHIFT),
        ("ecc", "affine", SHIFT),
        ("ecc", "homography", SHIFT),
        ("ecc", "euclidean", ROTATION),
        ("ecc", "affine", ROTATION),
        ("ecc", "homography", ROTATION),
        ("ecc", "affine", SCALE),
        ("ecc", "homography", SCALE),
    ],
)
def test_known_transform_is_recovered(face, method, constraint, truth):
    reg = rg.register(face, moved(face, truth), method=method, constraint=constraint)
    assert abs(reg.matrix[0, 2] - truth[0, 2]) < 0.5 and abs(reg.matrix[1, 2] - truth[1, 2]) < 0.5
    assert abs(angle_deg(reg.matrix) - angle_deg(truth)) < 0.5
    assert max_point_error(reg, truth) < 0.5
    assert reg.constraint == constraint


def test_phase_correlation_subpixel_and_sign(face):
    truth = affine(shift=(-7.25, 4.5))
    reg = rg.register_phase_correlation(face, moved(face, truth))
    np.testing.assert_allclose(reg.matrix[:2, 2], [-7.25, 4.5], atol=0.3)
    np.testing.assert_allclose(reg.matrix[:2, :2], np.eye(2))
    # a band-pass keeps the answer
    reg_bp = rg.register_phase_correlation(face, moved(face, truth), bandpass=(1, 30))
    np.testing.assert_allclose(reg_bp.matrix[:2, 2], [-7.25, 4.5], atol=0.5)


def test_translation_only_methods_cannot_fit_a_rotation(face):
    """The quality check sees what the constraint cannot represent."""
    mov = moved(face, affine(deg=6.0))
    z_rigid = al.score_registration(face, mov, rg.register(face, mov, "ecc", "euclidean"))
    z_pc = al.score_registration(face, mov, rg.register(face, mov, "phase_correlation"))
    assert z_rigid > z_pc


def test_identity_and_bad_arguments(face):
    reg = rg.register(face, face, method="identity")
    np.testing.assert_array_equal(reg.matrix, np.eye(3))
    with pytest.raises(ConfigError, match="RoMa"):
        rg.register(face, face, method="RoMa")
    with pytest.raises(ConfigError, match="constraint"):
        rg.register_ecc(face, face, constraint="similarity")
    with pytest.raises(ROIError, match="frame size"):
        rg.register(face, face[:, :-1])


def test_ecc_retries_with_larger_filter_then_reports(face):
    noise = smooth_noise(11, sigma=0.7)
    with pytest.raises(ROIError, match="did not converge"):
        rg.register_ecc(face, noise, "homography", n_iter=50, max_retries=2)


def test_nonrigid_refinement_follows_a_smooth_deformation(face):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # content near the centre bulges by up to 3 px to the right
    bump = 3.0 * np.exp(-((xx - 80) ** 2 + (yy - 60) ** 2) / (2 * 20.0**2))
    mov = cv2.remap(face, xx - bump, yy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    rigid = rg.register(face, mov, "ecc", "translation")
    refined = rg.register(face, mov, "ecc", "translation", nonrigid=True, farneback_params={"winsize": 15, "levels": 3})
    assert refined.flow is not None and refined.flow.shape == (H, W, 2)
    p = np.array([[80.0, 60.0]])
    truth_x = 80.0 + 3.0  # the bump centre moves by the full 3 px
    assert abs(wp.warp_points(p, refined)[0, 0] - truth_x) < 0.75
    assert abs(wp.warp_points(p, refined)[0, 0] - truth_x) < abs(wp.warp_points(p, rigid)[0, 0] - truth_x)
    assert al.score_registration(face, mov, refined) > al.score_registration(face, mov, rigid)


# --------------------------------------------------------------------------- warping consistency


def blob_image(points, shape=(H, W), sigma=1.5):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    im = np.zeros(shape)
    for x, y in points:
        im += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return im.astype(np.float32)


def centroid_near(im, p, r=5):
    x0, y0 = np.round(p).astype(int)
    win = im[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1].astype(np.float64)
    yy, xx = np.mgrid[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


@pytest.mark.parametrize("with_flow", [False, True])
def test_points_warp_consistently_with_images(with_flow):
    pts = np.array([[40.0, 35.0], [110.0, 40.0], [75.0, 85.0], [120.0, 90.0]])
    reg = wp.Registration(affine(deg=7.0, scale=1.03, shift=(4.3, -3.1)))
    if with_flow:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        flow = np.stack([1.5 * np.sin(xx / 25.0), 1.0 * np.cos(yy / 20.0)], axis=-1).astype(np.float32)
        reg = wp.Registration(reg.matrix, flow)
    warped_im = wp.warp_image(blob_image(pts), reg, border_value=0.0)
    q = wp.warp_points(pts, reg)
    for qi in q:
        np.testing.assert_allclose(centroid_near(warped_im, qi), qi, atol=0.15)
    # inverse map of the forward-mapped points returns the template points
    mx, my = wp.inverse_map(reg, (H, W))
    back = np.stack(
        [
            cv2.remap(m, q[:, :1].astype(np.float32), q[:, 1:].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
            for m in (mx, my)
        ],
        axis=1,
    )
    np.testing.assert_allclose(back, pts, atol=0.05)


def test_warp_rois_moves_masks_polygons_points_together():
    polys = {"a": [[40, 30], [100, 30], [100, 80], [40, 80]], "b": [[60, 50], [120, 50], [90, 100]]}
    rois = rois_from_polygons(polys, (H, W))
    rois.point_positions = np.array([[50.0, 40.0], [90.0, 70.0]], np.float32)
    reg = wp.Registration(affine(shift=(7.0, -5.0)))  # whole pixels: masks shift exactly
    out = wp.warp_rois(rois, reg, (H, W))
    for k in polys:
        # content moves by (+7, -5): out[y, x] = in[y + 5, x - 7]
        np.testing.assert_array_equal(out.masks[k][: H - 5, 7:], rois.masks[k][5:, :-7])
        np.testing.assert_allclose(out.polygons[k], rois.polygons[k] + [7.0, -5.0], atol=1e-4)
    np.testing.assert_allclose(out.point_positions, rois.point_positions + [7.0, -5.0], atol=1e-4)
    assert out.names == rois.names and out.example_image is None
    with pytest.raises(ROIError, match="outside"):
        wp.warp_rois(rois, wp.Registration(affine(shift=(400.0, 0.0))), (H, W))


# --------------------------------------------------------------------------- quality check


def test_unrelated_image_scores_below_threshold(face):
    aligned = al.alignment_score(
        moved(face, affine(shift=(0.4, -0.3)))
        + np.random.default_rng(1).normal(0, 0.05, face.shape).astype(np.float32),
        face,
    )
    assert aligned["z_in"] > 10
    for other in (smooth_noise(2), (face_texture(H, W, seed=9) / 255.0).astype(np.float32)):
        assert al.alignment_score(other, face)["z_in"] < 4.0
    # the reference's untapered score is fooled by the image borders on smooth noise
    a, b = smooth_noise(1), smooth_noise(2)
    assert al.alignment_score(a, b, window=None)["z_in"] > 4.0 > al.alignment_score(a, b)["z_in"]


def test_shortest_path_over_passing_pairs():
    z = np.array([[0, 1.0, 20, 0], [1.0, 0, 0, 30], [20, 0, 0, 10], [0, 30, 10, 0]])
    dist, pred = al.shortest_paths(z, 4.0, source=0)
    assert al.path_between(0, 1, pred) == [0, 2, 3, 1]
    np.testing.assert_allclose(dist[1], 1 / 20 + 1 / 10 + 1 / 30)
    dist, pred = al.shortest_paths(np.where(z == 10, 2.0, z), 4.0, source=0)
    assert al.path_between(0, 1, pred) is None and np.isinf(dist[1])


def test_match_search_composes_warps_through_another_session():
    """Template and session share nothing; an intermediate session sees both."""
    a, b = smooth_noise(1), smooth_noise(2)
    t1, t2 = np.array([5.5, -3.0]), np.array([-2.25, 4.0])
    template = a
    inter = 0.5 * moved(a, affine(shift=t1)) + 0.5 * moved(b, affine(shift=t1))
    session = moved(b, affine(shift=t1 + t2))
    res = al.align_to_template(template, session, {"inter": inter}, name="s")
    assert res.z_direct < 4.0
    assert res.path == ["template", "inter", "s"] and res.aligned and res.z_path > 4.0
    np.testing.assert_allclose(res.registration.matrix[:2, 2], t1 + t2, atol=1.0)
    off = al.align_to_template(template, session, {"inter": inter}, match_search=False)
    assert off.path == ["template", "session"] and not off.aligned


# --------------------------------------------------------------------------- reference image


def test_reference_image_keeps_the_quiet_frames():
    """Frames 300-599 are still; the others carry a moving pattern and flicker."""
    fs, n = 120.0, 900
    base = face_texture(48, 64, seed=5)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    frames = np.empty((n, 48, 64), np.uint8)
    for t in range(n):
        f = base.copy()
        if not 300 <= t < 600:
            f = f + 40 * np.sin(2 * np.pi * (xx / 16 + 6 * t / fs)) * (rng.random() + 0.5)
        frames[t] = np.clip(f + rng.normal(0, 1, f.shape), 0, 255).astype(np.uint8)
    image, kept = ri.reference_image_from_frames(frames, fs, ds_factor=4, ptile_keep=10, grid_size=4)
    assert len(kept) >= 3 and kept.min() >= 300 and kept.max() < 600
    assert image.shape == (48, 64) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() == pytest.approx(1.0)
    still = np.corrcoef(image.ravel(), base.ravel())[0, 1]
    busy = np.corrcoef(image.ravel(), frames[100].astype(float).ravel())[0, 1]
    assert still > 0.8 and still > busy


def test_downsample_and_clahe_contracts():
    f = np.random.default_rng(0).integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    d = ri.downsample_frames(f, 4)
    assert d.shape == (3, 10, 15) and d.dtype == np.float32
    assert abs(d.mean() - f.mean()) < 2
    with pytest.raises(ConfigError, match="ds_factor"):
        ri.downsample_frames(f, 100)
    c = ri.clahe(np.linspace(0, 1, 400).reshape(20, 20) ** 3, 2.0, 2)
    assert c.dtype == np.float32 and c.max() == pytest.approx(1.0) and c.min() >= 0
    with pytest.raises(ROIError):
        ri.clahe(np.zeros((8, 8)))


def test_reference_image_from_videos(tmp_path):
    from facerhythm_core.demo import write_demo_video

    p = tmp_path / "v.mp4"
    write_demo_video(p, n_frames=300, height=96, width=128)
    image, info = ri.reference_image_from_videos([p], 120.0, ds_factor=8, max_frames=260, grid_size=4)
    assert image.shape == (96, 128)
    assert info["frames_scored"][str(p)] == 260
    assert 0 < len(info["frames_kept"][str(p)]) < 260


# --------------------------------------------------------------------------- workflow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.mark.slow
def test_workflow_carries_rois_from_template_to_shifted_copy(tmp_path):
    from facerhythm_core.demo import write_demo_video

    shift, rot = (6.5, -4.25), 2.0
    write_demo_video(tmp_path / "day1.mp4", n_frames=300, seed=0)
    truth = write_demo_video(
        tmp_path / "day2.mp4", n_frames=300, seed=0, t0=3.0, global_shift=shift, global_rotation_deg=rot
    )
    assert truth["global_shift"] == list(shift)
    shutil.copytree(REPO / "config", tmp_path / "config")
    cfg = (REPO / "config" / "config.yaml").read_text()
    cfg = re.sub(r"demo: \[[^\]]*\]", "{}", cfg).replace("f_min: 1.0", "f_min: 10.0")
    # the demo exports NWB, which needs start times this sessions table does not give
    cfg = cfg.replace("  enabled: true", "  enabled: false")
    (tmp_path / "config" / "config.yaml").write_text(cfg)
    (tmp_path / "config" / "sessions.tsv").write_text(
        "session\tvideos\trois\nday1\tday1.mp4\tconfig:demo_face\nday2\tday2.mp4\ttemplate:day1\n"
    )
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(tmp_path),
        "-j2",
        "results/day2/rois.h5",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    res = tmp_path / "results"
    with h5py.File(res / "day1" / "rois.h5") as f:
        p1 = f["point_positions"][()]
    with h5py.File(res / "day2" / "rois.h5") as f:
        p2 = f["point_positions"][()]
        g = f["alignment"]
        assert g.attrs["aligned"] and g.attrs["z_final"] > 4.0
        assert json.loads(g.attrs["path"]) == ["day1", "day2"]
        assert f["tracking_mask"][()].any() and f["exampleImage"].shape == (240, 320, 3)
        assert f["provenance"].attrs["stage"] == "rois"
    g = affine(deg=rot, shift=shift, center=(159.5, 119.5))
    expected = p1 @ g[:2, :2].T + g[:2, 2]
    assert p2.shape == p1.shape
    assert np.abs(p2 - expected).max() < 1.0
    assert (res / "day2" / "roi_transfer_qc.png").stat().st_size > 0
    assert np.load(res / "day2" / "reference_image.npy").shape == (240, 320)
    # rerunning finds nothing to do
    r = subprocess.run(
        cmd + ["-n"], capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert "Nothing to be done" in r.stdout + r.stderr
