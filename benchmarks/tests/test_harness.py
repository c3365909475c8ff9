"""Fast checks of the benchmark harness's own logic (no reference venv, no long videos)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import cases  # noqa: E402
import compare  # noqa: E402
import synthetic  # noqa: E402
from measure import run_measured  # noqa: E402

SMALL = synthetic.SyntheticSpec(
    duration_s=1.0,
    fps=30.0,
    height=120,
    width=160,
    face_center=(80.0, 60.0),
    face_axes=(60.0, 45.0),
    regions=(
        synthetic.Region("a", (100.0, 60.0), 12.0, (1.0, 0.0), 5.0, 2.0, 2.0),
        synthetic.Region("b", (55.0, 50.0), 10.0, (0.0, 1.0), 3.0, 1.0),
    ),
)


def test_true_positions_invert_the_warp():
    p0 = synthetic.seed_points(SMALL, spacing=7, margin_px=4)
    P = synthetic.true_positions(SMALL, p0, n_iter=12)
    assert P.shape == (SMALL.num_frames, len(p0), 2)
    for t in (0, 3, 7, 17):
        dx, dy = synthetic.displacement(SMALL, P[t, :, 0], P[t, :, 1], t / SMALL.fps)
        # p - d(p, t) must land back on the home position
        assert np.abs(P[t, :, 0] - dx - p0[:, 0]).max() < 1e-6
        assert np.abs(P[t, :, 1] - dy - p0[:, 1]).max() < 1e-6
    # frame 0: sin(0) = 0 so nothing has moved; later frames do move, by at most the amplitude
    assert np.abs(P[0] - p0).max() < 1e-9
    assert 0.5 < np.abs(P - p0).max() <= 2.0 + 1e-6


def test_rendering_is_deterministic_and_moves_the_texture():
    a = synthetic.render_frames(SMALL, 0, 6)
    b = synthetic.render_frames(SMALL, 3, 6)
    assert a.dtype == np.uint8 and a.shape == (6, 120, 160)
    assert np.array_equal(a[3:], b)  # any frame renders alone to the same bytes
    # without sensor noise, only the moving regions change between frames
    quiet = dataclasses.replace(SMALL, noise_sigma=0.0)
    c = synthetic.render_frames(quiet, 0, 6).astype(float)
    x0, y0 = map(int, quiet.regions[1].center)  # constant-amplitude 3 Hz region
    assert np.abs(c[2, y0 - 6 : y0 + 6, x0 - 6 : x0 + 6] - c[0, y0 - 6 : y0 + 6, x0 - 6 : x0 + 6]).mean() > 2.0
    assert np.abs(c[2, :15, :15] - c[0, :15, :15]).max() == 0


def test_envelope_and_spec_roundtrip():
    r = SMALL.regions[0]
    e = synthetic.envelope(r, np.array([0.0, r.envelope_period_s / 2]))
    assert e[0] == pytest.approx(0.0) and e[1] == pytest.approx(1.0)
    assert synthetic.SyntheticSpec.from_json(SMALL.to_json()) == SMALL


def test_vqt_window_and_fmin_rule():
    assert cases.vqt_window(120, 4.0, 1.0) == 481  # shared/reference/algorithms.md §7.1
    p = cases.make_params(250.0, 994)
    assert cases.vqt_window(250.0, 4.0, p["spectrogram"]["f_min"]) <= 0.75 * 994
    assert p["spectrogram"]["f_max"] == 60.0
    p30 = cases.make_params(30.0, 2330)
    assert p30["spectrogram"]["f_min"] == 1.0 and p30["spectrogram"]["f_max"] == pytest.approx(13.5)


def test_grid_points_reference_order():
    m = np.zeros((50, 60), bool)
    m[10:40, 5:55] = True
    pts = cases.grid_points(m, 10)
    assert pts.dtype == np.float32 and pts.shape[1] == 2
    assert m[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    # x-major: x is non-decreasing, y ascends within each x
    assert np.all(np.diff(pts[:, 0]) >= 0)
    assert pts[0].tolist() == [5.0, 10.0] and pts[1].tolist() == [5.0, 20.0]


def _cp(rng, shapes, R):
    return [rng.random((n, R)) for n in shapes]


def test_factor_match_score():
    rng = np.random.default_rng(0)
    fa = _cp(rng, (30, 12, 20), 4)
    perm = [2, 0, 3, 1]
    fb = [f[:, perm] * s for f, s in zip(fa, (2.0, 0.5, 1.0))]  # permuted, rescaled per axis
    fms, per = compare.factor_match_score(fa, fb)
    assert fms == pytest.approx(1.0, abs=1e-9)
    other = _cp(np.random.default_rng(1), (30, 12, 20), 4)
    fms_other, _ = compare.factor_match_score(fa, [o - o.mean(0) for o in other])
    assert fms_other < 0.5
    # a weight mismatch is penalised
    fms_w, _ = compare.factor_match_score(fa, fa, np.ones(4), np.array([1, 1, 1, 0.5]))
    assert fms_w == pytest.approx((3 + 0.5) / 4)


def test_tracking_and_spectrogram_fidelity():
    rng = np.random.default_rng(0)
    p0 = rng.random((20, 2)) * 100
    tr = p0[None] + np.sin(np.linspace(0, 20, 200))[:, None, None] * rng.random((1, 20, 2))
    a = dict(p0=p0, tracks={"0": tr})
    same = compare.tracking_fidelity(a, a)
    assert same["rms_diff_px"] == 0 and same["median_r_moving"] == pytest.approx(1.0)
    b = dict(p0=p0, tracks={"0": tr + 0.1})
    off = compare.tracking_fidelity(b, a)
    assert off["rms_diff_px"] == pytest.approx(0.1) and off["median_r_moving"] == pytest.approx(1.0)

    S = rng.random((2, 5, 7, 9)) + 0.1
    f = np.geomspace(1, 10, 7)
    s_ref = dict(spec={"0": S}, freqs=f, x_axis={"0": np.arange(9.0)})
    s_ours = dict(spec={"0": S * 1.01}, freqs=f, x_axis={"0": np.arange(9.0)})
    fid = compare.spectrogram_fidelity(s_ours, s_ref)
    assert fid["rel_error"] == pytest.approx(0.01)
    assert fid["x_axis_max_abs_diff"] == 0


def test_run_measured_reports_child_peak_rss(tmp_path):
    metrics = tmp_path / "m.json"
    code = (
        "import numpy as np, json, sys; a = np.ones(300 * 2**20 // 8); a += 1; "
        f"json.dump({{'ok': True}}, open({str(metrics)!r}, 'w'))"
    )
    m = run_measured([sys.executable, "-c", code], metrics_path=metrics, nice=0)
    assert m.rc == 0 and m.metrics == {"ok": True}
    assert m.peak_rss_mb > 300
    bad = run_measured([sys.executable, "-c", "raise SystemExit(3)"], nice=0)
    assert bad.rc == 3


def test_run_ours_runs_the_stage_api(tmp_path):
    """track -> spectrogram -> tca through run_ours.py (the stage API), on a demo clip."""
    import json
    import subprocess

    import h5py

    from facerhythm_core.demo import demo_polygons, write_demo_video
    from facerhythm_core.rois import make_points, polygon_mask

    video = tmp_path / "clip.mp4"
    write_demo_video(video, n_frames=600)
    mask = polygon_mask(np.asarray(demo_polygons()["face"]), (240, 320))
    with h5py.File(tmp_path / "inputs.h5", "w") as f:
        f["point_positions"] = make_points(mask, 16)
        f["tracking_mask"] = mask
    params = {
        "videos": [str(video)],
        "tracking": {},
        "tca": {"rank": 3, "n_iter_max": 20},
        "spectrogram": {"f_min": 4.0, "f_max": 30.0, "n_freq_bins": 12},
    }
    (tmp_path / "p.json").write_text(json.dumps(params))
    run = [sys.executable, str(Path(__file__).resolve().parents[1] / "run_ours.py")]
    common = ["--params", str(tmp_path / "p.json")]
    for stage, src, out in [
        ("track", ["--inputs", str(tmp_path / "inputs.h5")], "tracking.h5"),
        ("spectrogram", ["--tracking", str(tmp_path / "tracking.h5")], "spectrograms.h5"),
        ("tca", ["--spectrograms", str(tmp_path / "spectrograms.h5")], "tca.h5"),
    ]:
        subprocess.run(
            run + [stage, *common, *src, "--out", str(tmp_path / out), "--metrics", str(tmp_path / f"{stage}.json")],
            check=True,
        )
        m = json.loads((tmp_path / f"{stage}.json").read_text())
        assert m["stage"] == stage and m["t_stage_s"] > 0
    with h5py.File(tmp_path / "tca.h5") as f:
        assert f["decompositions/0/factors/time"].shape[1] == 3
