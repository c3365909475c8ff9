"""Figures, overlay videos and the report: small synthetic data in the stage-file layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from facerhythm_core import plots
from facerhythm_core.keys import start_offsets
from facerhythm_core.overlay import COLOUR_BAD, COLOUR_OK, session_window, write_overlay_video

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

H, W, FPS = 96, 128, 30.0


# ----------------------------------------------------------------------------------
# synthetic inputs
# ----------------------------------------------------------------------------------


def png_array(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def assert_not_blank(img: np.ndarray, min_colours: int = 20):
    assert img.std() > 10, "image is (nearly) uniform"
    n_col = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert n_col >= min_colours, f"only {n_col} distinct colours"
    # something other than white occupies a fair share of the canvas
    assert (img.min(axis=2) < 200).mean() > 0.02


def face_frames(n: int, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: a textured ellipse that shifts by a pixel or two."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(40, 220, (H, W)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    face = (((xx - W / 2) / (0.45 * W)) ** 2 + ((yy - H / 2) / (0.45 * H)) ** 2) < 1
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        img = np.where(face, np.roll(tex, int(round(2 * np.sin(i / 4))), axis=1), 20)
        out[i] = img[..., None].astype(np.uint8)
    return out


def write_video(path: Path, frames: np.ndarray, fps: float = FPS) -> None:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    assert w.isOpened()
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()


def grid_points(spacing: int = 12) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(28, 100, spacing), np.arange(20, 78, spacing), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)


def rect_mask(x0, x1, y0, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def write_rois(path: Path, image: np.ndarray, points: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("mask_images/left", data=rect_mask(20, 66, 12, 86))
        f.create_dataset("mask_images/right", data=rect_mask(62, 108, 12, 86))
        f.create_dataset("roi_points/left", data=np.array([[20, 12], [65, 12], [65, 85]], np.float32))
        f.create_dataset("roi_points/right", data=np.array([[62, 12], [107, 12], [107, 85]], np.float32))
        f.create_dataset("exampleImage", data=image)
        f.create_dataset("point_positions", data=points)
        f.create_dataset("tracking_mask", data=rect_mask(20, 108, 12, 86))
        f.attrs["point_spacing"] = 12


def tracks(T: int, points: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 2) positions with rhythms that differ between the left and right points,
    and a (T, N) violation matrix with a burst on the first two points."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FPS
    left = points[:, 0] < 64
    dx = np.where(left[None], 1.5 * np.sin(2 * np.pi * 6 * t)[:, None], 0.3 * np.sin(2 * np.pi * 2 * t)[:, None])
    dy = np.where(left[None], 0.2 * np.sin(2 * np.pi * 3 * t)[:, None], 1.0 * np.sin(2 * np.pi * 2 * t)[:, None])
    pos = points[None] + np.stack([dx, dy], -1) + 0.05 * rng.standard_normal((T, len(points), 2))
    viol = np.zeros((T, len(points)), bool)
    viol[T // 3 : T // 3 + 5, :2] = True
    return pos.astype(np.float32), viol


def write_tracking(path: Path, points: np.ndarray, per_key: list, contiguous: bool, num_frames):
    from scipy.sparse import coo_matrix

    with h5py.File(path, "w") as f:
        f.create_dataset("point_positions", data=points)
        vf = []
        for i, (pos, viol) in enumerate(per_key):
            f.create_dataset(f"points_tracked/{i}", data=pos)
            c = coo_matrix(viol)
            g = f.create_group(f"violations/{i}")
            g.create_dataset("row", data=c.row.astype(np.int32))
            g.create_dataset("col", data=c.col.astype(np.int32))
            g.create_dataset("data", data=c.data.astype(bool))
            g.create_dataset("shape", data=np.array(viol.shape, np.int64))
            vf.append(viol.any(axis=1).mean())
        f.create_dataset("violation_fraction", data=np.array(vf, np.float64))
        f.create_dataset("num_frames", data=np.array(num_frames, np.int64))
        f.attrs["frame_rate"] = FPS
        f.attrs["contiguous"] = contiguous
        f.attrs["num_keys"] = len(per_key)


FREQS = np.geomspace(1.0, 12.0, 8).astype(np.float32)


def spectrogram_of(pos: np.ndarray, points: np.ndarray, ds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A crude magnitude spectrogram (2, N, F, T') by windowed projection, and bin times."""
    disp = (pos - points[None]).transpose(2, 1, 0)  # (2, N, T)
    T = disp.shape[-1]
    win = 15
    centres = np.arange(win // 2, T - win // 2, ds)
    n = np.arange(-(win // 2), win // 2 + 1)
    kern = np.exp(2j * np.pi * FREQS[:, None] * n[None] / FPS) * np.hanning(win)[None]  # (F, win)
    seg = np.stack([disp[..., c + n] for c in centres], -1)  # (2, N, win, T')
    spec = np.abs(np.einsum("fw,anwt->anft", kern, seg)).astype(np.float32)
    return spec, centres / FPS


def write_spectrograms(path: Path, points: np.ndarray, specs: list, times: list):
    with h5py.File(path, "w") as f:
        for i, (s, t) in enumerate(zip(specs, times)):
            f.create_dataset(f"spectrograms/{i}", data=s)
            f.create_dataset(f"times/{i}", data=t)
            f.create_dataset(f"x_axis/{i}", data=t * FPS)
        f.create_dataset("frequencies", data=FREQS)
        f.create_dataset("point_positions", data=points)
        f.attrs["fs"] = FPS
        f.attrs["frame_rate"] = FPS


def write_tca(path: Path, specs: dict, times: dict, points: np.ndarray, joint: bool = False):
    from facerhythm_core import tca

    kw = dict(rank=3, n_iter_max=15, random_state=0, device="cpu")
    if joint:
        res = tca.decompose_joint(specs, mode="concatenate", **kw)
        flat_t = {f"{s}/{k}": t for s, d in times.items() for k, t in d.items()}
        pp = {s: points for s in specs}
    else:
        res = tca.decompose(specs, videos="separate", **kw)
        flat_t, pp = times, points
    with h5py.File(path, "w") as f:
        tca.write_tca_h5(f, res, frequencies=FREQS, times=flat_t, point_positions=pp)
        if joint:
            f.create_dataset("sessions", data=list(specs), dtype=h5py.string_dtype())


def make_project(root: Path) -> dict:
    """A work folder with two sessions' videos and every stage file the figures need.

    sessA: two videos tracked separately (keys 0, 1); sessB: one video. Joint group
    'both' = sessA + sessB.
    """
    res = root / "results"
    points = grid_points()
    sessions = {"sessA": [48, 40], "sessB": [56]}
    all_specs, all_times = {}, {}
    for si, (s, lengths) in enumerate(sessions.items()):
        (root / "videos").mkdir(exist_ok=True)
        (res / s).mkdir(parents=True)
        vids = []
        for vi, n in enumerate(lengths):
            frames = face_frames(n, seed=10 * si + vi)
            p = root / "videos" / f"{s}_{vi}.mp4"
            write_video(p, frames)
            vids.append(p)
        info = {
            "videos": [
                {
                    "path": str(p),
                    "num_frames": n,
                    "fps": FPS,
                    "height": H,
                    "width": W,
                    "channels": 3,
                    "codec": "mpeg4",
                    "pixel_format": "yuv420p",
                }
                for p, n in zip(vids, lengths)
            ],
            "frame_rate": FPS,
            "height": H,
            "width": W,
            "num_frames": lengths,
            "num_frames_total": sum(lengths),
        }
        (res / s / "videos.json").write_text(json.dumps(info))
        write_rois(res / s / "rois.h5", face_frames(1, seed=10 * si)[0], points)
        per_key = [tracks(n, points, seed=10 * si + vi) for vi, n in enumerate(lengths)]
        write_tracking(res / s / "tracking.h5", points, per_key, False, lengths)
        st = [spectrogram_of(pos, points) for pos, _ in per_key]
        write_spectrograms(res / s / "spectrograms.h5", points, [a for a, _ in st], [b for _, b in st])
        all_specs[s] = {str(i): a for i, (a, _) in enumerate(st)}
        all_times[s] = {str(i): b for i, (_, b) in enumerate(st)}
        write_tca(res / s / "tca.h5", all_specs[s], all_times[s], points)
    (res / "joint" / "both").mkdir(parents=True)
    write_tca(res / "joint" / "both" / "tca.h5", all_specs, all_times, points, joint=True)
    return {"root": root, "sessions": sessions, "points": points}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """:func:`make_project` in a temporary folder."""
    return make_project(tmp_path_factory.mktemp("plots_project"))


# ----------------------------------------------------------------------------------
# array helpers
# ----------------------------------------------------------------------------------


def test_points_in_masks_and_index_map():
    pts = np.array([[10, 10], [50, 20], [200, 5], [-3, 4]], np.float32)
    m = np.zeros((40, 60), bool)
    m[5:15, 5:15] = True
    sel = plots.points_in_masks(pts, {"a": m})["a"]
    assert sel.tolist() == [True, False, False, False]
    idx = plots.point_index_map(pts[:2], (40, 60), radius=3)
    assert idx[10, 10] == 0 and idx[20, 50] == 1
    assert idx[20, 52] == 1 and idx[20, 54] == -1  # 4 px away, outside the radius
    assert idx[0, 0] == -1


def test_choose_example_points_spans_motion():
    motion = np.array([0.1, 5.0, 2.0, 3.0, 0.5, 4.0])
    ids = plots.choose_example_points(motion, k=3)
    assert ids[0] == 1  # the most mobile first
    assert ids[-1] == 0  # ... down to the least mobile
    assert len(set(ids.tolist())) == 3
    valid = np.ones(6, bool)
    valid[1] = False
    assert 1 not in plots.choose_example_points(motion, k=6, valid=valid)
    assert len(plots.choose_example_points(motion, k=10)) == 6


def test_bin_series_keeps_extremes():
    t = np.arange(100_000, dtype=float)
    y = np.zeros(100_000)
    y[12_345] = 7.0
    tb, yb = plots.bin_series(t, y, max_points=1000, how="max")
    assert len(tb) <= 1000 and yb.max() == 7.0
    tb, yb = plots.bin_series(t, y, max_points=1000, how="minmax")
    assert len(tb) <= 1000 and yb.max() == 7.0 and yb.min() == 0.0
    tb, yb = plots.bin_series(t, y, max_points=1000)
    assert 0 < yb.max() < 7.0  # the mean dilutes the spike


def test_session_window_splits_across_videos():
    assert session_window([10, 20, 5], 8, 15) == [(0, 8, 10), (1, 0, 13)]
    assert session_window([10, 20, 5], 28, 100) == [(1, 18, 20), (2, 0, 5)]
    with pytest.raises(ValueError, match="outside the session"):
        session_window([10], 10, 5)
    np.testing.assert_allclose(start_offsets([30, 60, 90], 30.0), [0, 1, 3])


def test_phase_colours_follow_angle_and_magnitude():
    z = np.array([1.0, -1.0, 1j, 0.0])
    rgba = plots.phase_rgba(z)
    assert rgba.shape == (4, 4)
    assert rgba[3, 3] == 0.0 and rgba[0, 3] == 1.0  # zero magnitude is transparent
    assert not np.allclose(rgba[0, :3], rgba[2, :3])  # different phases, different colours


# ----------------------------------------------------------------------------------
# figures from arrays
# ----------------------------------------------------------------------------------


def _save(fig, tmp_path, name):
    p = tmp_path / name
    plots.save_figure(fig, p, dpi=60)
    return png_array(p)


def test_rois_figure(tmp_path):
    img = face_frames(1)[0]
    masks = {"left": rect_mask(20, 66, 12, 86), "right": rect_mask(62, 108, 12, 86)}
    a = _save(plots.plot_rois(img, masks, grid_points(), rect_mask(20, 108, 12, 86)), tmp_path, "r.png")
    assert a.shape[1] == int(7.0 * 60)
    assert_not_blank(a)


def test_tracking_figures(tmp_path):
    pts = grid_points()
    pos, viol = tracks(90, pts, 0)
    share = viol.mean(axis=1)
    a = _save(plots.plot_violations([share, share[:40]], FPS, fractions=[0.05, 0.0]), tmp_path, "v.png")
    assert a.shape == (int(3.2 * 60), int(8.0 * 60), 3)
    assert_not_blank(a)
    ids = np.array([3, 0])
    tr = [pos[:, ids] - pts[ids][None]]
    b = _save(
        plots.plot_displacement_traces(tr, FPS, ids.tolist(), pts[ids], image=face_frames(1)[0]), tmp_path, "d.png"
    )
    assert b.shape == (int(4.6 * 60), int(11.0 * 60), 3)
    assert_not_blank(b)


def test_spectral_figures(tmp_path):
    pts = grid_points()
    pos, _ = tracks(90, pts, 0)
    spec, t = spectrogram_of(pos, pts)
    member = plots.points_in_masks(pts, {"left": rect_mask(20, 66, 12, 86), "nowhere": np.zeros((H, W), bool)})
    means = plots.roi_mean_spectrogram(spec, member)
    assert np.isnan(means["nowhere"]).all()
    np.testing.assert_allclose(means["left"], spec[:, member["left"]].mean(axis=1), rtol=1e-5)
    a = _save(plots.plot_mean_spectrograms({"left": [means["left"]]}, [t], FREQS), tmp_path, "s.png")
    assert_not_blank(a)
    b = _save(plots.plot_power_spectrum({"left": spec[:, member["left"]].mean(-1)}, FREQS), tmp_path, "p.png")
    assert_not_blank(b)


def test_tca_figures_real_and_complex(tmp_path):
    rng = np.random.default_rng(1)
    pts = grid_points()
    N, R = len(pts), 3
    px, py = rng.random((N, R)), rng.random((N, R))
    fr = rng.random((len(FREQS), R))
    t = np.arange(50) / 5.0
    tf = rng.random((50, R))
    a = _save(
        plots.plot_tca_components(
            px, py, fr, FREQS, {"s": [(t, tf)]}, pts, image=face_frames(1)[0], evr=np.array([0.5, 0.2, 0.1])
        ),
        tmp_path,
        "c.png",
    )
    assert_not_blank(a, min_colours=50)
    # complex time factors and two sessions' panels plus a stacked-axis factor
    tz = tf * np.exp(1j * np.linspace(0, 6, 50))[:, None]
    b = _save(
        plots.plot_tca_components(
            px,
            py,
            fr,
            FREQS,
            {"A": [(t, tz)], "B": [(t, tz[::-1])]},
            pts,
            stack_factor=rng.random((2, R)),
            stack_names=["A", "B"],
            shape=(H, W),
        ),
        tmp_path,
        "cz.png",
    )
    assert_not_blank(b, min_colours=50)
    assert b.shape[1] > a.shape[1]  # more columns
    c = _save(plots.plot_tca_fit(np.array([0.5, 0.2, 0.1]), np.geomspace(1, 0.1, 30), 0.8, 0.1), tmp_path, "f.png")
    assert_not_blank(c)
    sweep = {"ranks": np.array([2, 4, 6]), "rel_error": rng.random((3, 2)), "similarity": rng.random((3, 2))}
    d = _save(plots.plot_tca_fit(np.array([0.5, 0.2]), np.geomspace(1, 0.1, 30), sweep=sweep), tmp_path, "fs.png")
    assert_not_blank(d)
    assert d.shape[1] > c.shape[1]  # a third panel for the sweep
    with pytest.raises(ValueError, match="positions"):
        plots.plot_tca_components(px, py, fr, FREQS, {"s": [(t, tf)]}, pts[:-1])


# ----------------------------------------------------------------------------------
# overlay video
# ----------------------------------------------------------------------------------


def decode(path) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(str(path), dimension_order="NHWC")[:].numpy()


@pytest.mark.parametrize("codec", ["auto", "mp4v"])
def test_overlay_video_crosses_videos_and_marks_violations(tmp_path, codec):
    v0, v1 = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(v0, face_frames(20, 0))
    write_video(v1, face_frames(15, 1))
    pts = np.tile(np.array([[30.0, 30.0], [90.0, 60.0]], np.float32), (12, 1, 1))
    bad = np.zeros((12, 2), bool)
    bad[:, 1] = True
    out = tmp_path / "ov.mp4"
    info = write_overlay_video(out, [v0, v1], [20, 15], pts, bad, start=14, fps=FPS, radius=3, codec=codec, label=False)
    assert info["frames"] == 12
    frames = decode(out)
    assert frames.shape == (12, H, W, 3)
    f = frames[3].astype(int)
    # the tracked point is a filled blue dot; the violating one an orange ring with a cross
    assert np.abs(f[30, 30] - np.array(COLOUR_OK)).max() < 40
    ring = f[55:66, 85:96].reshape(-1, 3)
    assert (np.abs(ring - np.array(COLOUR_BAD)).max(axis=1) < 50).sum() >= 10
    assert not list(tmp_path.glob(".ov.tmp-*"))


def test_overlay_rejects_a_window_past_the_end(tmp_path):
    v0 = tmp_path / "a.mp4"
    write_video(v0, face_frames(10))
    with pytest.raises(ValueError, match="only 4 frames"):
        write_overlay_video(tmp_path / "o.mp4", [v0], [10], np.zeros((8, 1, 2)), None, 6, FPS)
    assert not (tmp_path / "o.mp4").exists()


# ----------------------------------------------------------------------------------
# the rules: every figure from stage files, then the HTML report
# ----------------------------------------------------------------------------------


def _workflow_copy(root: Path) -> Path:
    """The workflow folder with rules/report.smk included (as the lead's Snakefile will)."""
    wf = root / "workflow"
    if not wf.exists():
        shutil.copytree(REPO / "workflow", wf, ignore=shutil.ignore_patterns("__pycache__"))
        sf = wf / "Snakefile"
        text = sf.read_text()
        if "rules/report.smk" not in text:
            text = text.replace('include: "rules/tca.smk"', 'include: "rules/tca.smk"\ninclude: "rules/report.smk"')
        sf.write_text(text)
    return wf / "Snakefile"


def _config(root: Path, sessions: dict):
    (root / "config").mkdir(exist_ok=True)
    rows = ["session\tvideos\trois\tfps\tcontiguous"]
    for s, lengths in sessions.items():
        vids = ";".join(f"videos/{s}_{i}.mp4" for i in range(len(lengths)))
        rows.append(f"{s}\t{vids}\tconfig:box\t\tfalse")
    (root / "config" / "sessions.tsv").write_text("\n".join(rows) + "\n")
    (root / "config" / "config.yaml").write_text(
        "sessions: config/sessions.tsv\nresults_dir: results\n"
        "roi_sets:\n  box:\n    face: [[20, 12], [107, 12], [107, 85], [20, 85]]\n"
        "tca:\n  joint:\n    both: [sessA, sessB]\n"
        "report:\n  overlay_start: 30\n  overlay_frames: 30\n  n_example_points: 3\n"
    )


def run_snakemake(snakefile, workdir, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--rerun-triggers",
        "mtime",
        "--cores",
        "2",
        *args,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.mark.slow
def test_report_rules_and_html_report(project):
    root = project["root"]
    _config(root, project["sessions"])
    snakefile = _workflow_copy(root)
    res = root / "results"
    # sessA (two videos) in full, and the joint group (which also reads sessB's files);
    # sessB's own figures would only repeat the same rules
    targets = []
    for s in ["sessA"]:
        d = f"results/{s}/figures"
        targets += [
            f"{d}/rois.png",
            f"{d}/violations.png",
            f"{d}/displacements.png",
            f"{d}/overlay.mp4",
            f"{d}/spectrograms.png",
            f"{d}/power_spectrum.png",
            f"{d}/tca_components",
            f"{d}/tca_fit",
        ]
    targets += ["results/joint/both/figures/tca_components", "results/joint/both/figures/tca_fit"]
    r = run_snakemake(snakefile, root, *targets)
    # only figure rules ran: the analysis files were taken as they are
    for rule in ("track_points", "spectrogram", "tca", "rois"):
        assert f"rule {rule}:" not in r.stderr + r.stdout
    for s in ["sessA"]:
        lengths = project["sessions"][s]
        d = res / s / "figures"
        for name in ("rois", "violations", "displacements", "spectrograms", "power_spectrum"):
            assert_not_blank(png_array(d / f"{name}.png"))
        frames = decode(d / "overlay.mp4")
        assert frames.shape == (min(30, sum(lengths) - 30), H, W, 3)
        assert frames.std() > 10
        n_dec = len(lengths)  # tca.videos: separate -> one decomposition per video
        assert sorted(p.name for p in (d / "tca_components").glob("*.png")) == [f"{i}.png" for i in range(n_dec)]
        for p in list((d / "tca_components").glob("*.png")) + list((d / "tca_fit").glob("*.png")):
            assert_not_blank(png_array(p))
        assert (root / "logs" / "plot_tca" / f"{s}.log").stat().st_size > 0
    j = res / "joint" / "both" / "figures"
    comps = list((j / "tca_components").glob("*.png"))
    assert len(comps) == 1
    assert_not_blank(png_array(comps[0]), min_colours=50)

    html = root / "report.html"
    run_snakemake(snakefile, root, "--report", str(html), *targets)
    text = html.read_text(errors="replace")
    assert html.stat().st_size > 100_000
    for needle in ("sessA", "joint: both", "overlay.mp4", "violating", "Spectrograms"):
        assert needle in text, needle
