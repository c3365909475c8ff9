"""The figure, events and export stages (facerhythm_core.stages) called directly, as
their scripts call them, on small stage files written by the real writers."""

from __future__ import annotations

import numpy as np
import pytest

from facerhythm_core import stages
from facerhythm_core.errors import ROIError

# the stage files of tests/test_plots.py (sessA: two videos, sessB: one; joint group
# 'both') and of tests/test_events.py (a session with a planted response to cues)
from test_events import _session_files
from test_plots import H, W, assert_not_blank, decode, make_project, png_array


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("stages_project"))


def _session(project, s="sessA"):
    d = project["root"] / "results" / s
    return d, project["sessions"][s]


def _videos(project, s="sessA"):
    return [project["root"] / "videos" / f"{s}_{i}.mp4" for i in range(len(project["sessions"][s]))]


def test_plot_rois_stage(project, tmp_path):
    d, _ = _session(project)
    out = stages.plot_rois(d / "rois.h5", tmp_path / "rois.png", session="sessA")
    img = png_array(out)
    assert img.shape[0] > 400 and img.shape[1] > 400
    assert_not_blank(img)
    assert not list(tmp_path.glob(".*tmp-*"))


def test_plot_rois_stage_needs_an_example_image(tmp_path):
    import h5py

    with h5py.File(tmp_path / "rois.h5", "w") as f:
        f.create_dataset("mask_images/a", data=np.ones((H, W), bool))
        f.create_dataset("point_positions", data=np.array([[10.0, 10.0]], np.float32))
    with pytest.raises(ROIError, match="no exampleImage"):
        stages.plot_rois(tmp_path / "rois.h5", tmp_path / "rois.png", session="s")
    assert not (tmp_path / "rois.png").exists()


def test_plot_tracking_stage(project, tmp_path):
    d, _ = _session(project)
    out = stages.plot_tracking(
        d / "tracking.h5",
        d / "rois.h5",
        d / "videos.json",
        tmp_path / "violations.png",
        tmp_path / "displacements.png",
        session="sessA",
        n_example_points=3,
    )
    ids = out["example_points"]
    assert len(ids) == 3 and len(set(ids)) == 3
    # the fixture's violating points (0 and 1) are avoided while others remain
    assert not {0, 1} & set(ids)
    for name in ("violations", "displacements"):
        assert_not_blank(png_array(tmp_path / f"{name}.png"))


def test_overlay_video_stage(project, tmp_path):
    d, lengths = _session(project)
    total = sum(lengths)
    out = tmp_path / "overlay.mp4"
    res = stages.overlay_video(d / "tracking.h5", d / "videos.json", _videos(project), out, start=40, n_frames=20)
    assert res["frames"] == 20  # frames 40-59 span both videos (48 + 40)
    frames = decode(out)
    assert frames.shape == (20, H, W, 3) and frames.std() > 10
    # a start past the end falls back to frame 0
    res = stages.overlay_video(
        d / "tracking.h5", d / "videos.json", _videos(project), out, start=total + 5, n_frames=10
    )
    assert res["frames"] == 10


def test_plot_spectrograms_stage(project, tmp_path):
    d, _ = _session(project)
    out = stages.plot_spectrograms(
        d / "spectrograms.h5",
        d / "rois.h5",
        d / "videos.json",
        tmp_path / "spectrograms.png",
        tmp_path / "power_spectrum.png",
        session="sessA",
    )
    counts = out["points_per_roi"]
    n = len(project["points"])
    assert counts["all points"] == n
    assert 0 < counts["left"] < n and 0 < counts["right"] < n
    for name in ("spectrograms", "power_spectrum"):
        assert_not_blank(png_array(tmp_path / f"{name}.png"))


def test_plot_tca_stage_session_and_joint(project, tmp_path):
    d, lengths = _session(project)
    names = stages.plot_tca(
        d / "tca.h5",
        d / "rois.h5",
        d / "videos.json",
        tmp_path / "s" / "components",
        tmp_path / "s" / "fit",
        label="sessA",
        sessions=["sessA"],
    )
    assert names == [str(i) for i in range(len(lengths))]  # tca.videos: separate
    for sub in ("components", "fit"):
        pngs = sorted(p.name for p in (tmp_path / "s" / sub).glob("*.png"))
        assert pngs == [f"{n}.png" for n in names]
    assert_not_blank(png_array(tmp_path / "s" / "components" / "0.png"))
    res = project["root"] / "results"
    both = ["sessA", "sessB"]
    names = stages.plot_tca(
        res / "joint" / "both" / "tca.h5",
        [res / s / "rois.h5" for s in both],
        [res / s / "videos.json" for s in both],
        tmp_path / "j" / "components",
        tmp_path / "j" / "fit",
        label="joint group both",
        sessions=both,
        joint=True,
    )
    assert len(names) == 1
    comp = png_array(tmp_path / "j" / "components" / f"{names[0]}.png")
    assert_not_blank(comp, min_colours=50)
    # one time column per session: wider than a session's single-video figure
    assert comp.shape[1] > png_array(tmp_path / "s" / "components" / "0.png").shape[1]


def test_events_and_plot_events_stages(tmp_path):
    from facerhythm_core.events import read_events_h5

    d = _session_files(tmp_path)
    summary = stages.events(
        d / "events.tsv",
        d / "tca.h5",
        d / "spectrograms.h5",
        d / "rois.h5",
        d / "videos.json",
        d / "events.h5",
        session="m",
        params={"pre": 1.0, "post": 2.0},
    )
    assert len(summary["skipped"]) >= 1  # the cue at 0.5 s, before the first time bin
    e = read_events_h5(d / "events.h5")
    assert e["labels"] == ["cue", "catch"]
    n_columns = stages.plot_events(d / "events.h5", d / "events.png", session="m")
    assert n_columns == 4  # two decompositions x two labels
    img = png_array(d / "events.png")
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3)[::5], axis=0)) > 20


@pytest.mark.slow
def test_nwb_export_stage(tmp_path):
    """A session analysed in-process (tests/test_nwb.py's helper), exported by the stage."""
    import h5py

    from facerhythm_core import nwb
    from facerhythm_core.demo import write_demo_video
    from test_nwb import FPS as NWB_FPS
    from test_nwb import N_FR, _analyse
    from test_nwb import H as NWB_H
    from test_nwb import W as NWB_W

    videos = [tmp_path / "videos" / f"m_{i + 1}.mp4" for i in range(2)]
    videos[0].parent.mkdir()
    for i, v in enumerate(videos):
        write_demo_video(v, n_frames=N_FR, fps=NWB_FPS, height=NWB_H, width=NWB_W, seed=0, t0=10.0 * i)
    res = tmp_path / "results" / "m"
    _analyse(res, videos)
    meta = nwb.session_metadata(
        {
            "experimenter": ["Doe, Jane"],
            "lab": "test lab",
            "institution": "test institute",
            "subject": {"species": "Mus musculus", "sex": "M", "age": "P90D", "subject_id": "m1"},
        },
        "m",
        table_start="2024-03-04T10:00:00+01:00",
    )
    keys = ("tracking", "spectrograms", "tca", "rois", "videos_info", "timestamps")
    paths = {k: res / f"{k if k != 'videos_info' else 'videos'}.{'json' if k == 'videos_info' else 'h5'}" for k in keys}
    out = res / "m.nwb"
    stages.nwb_export({**paths, "events": None, "acquisition": None}, out, session="m", meta=meta)
    assert out.stat().st_size > 100_000
    assert [m for m in nwb.inspect_nwb(out) if m["importance"] in nwb.FAILING] == []
    got = nwb.read_nwb_results(out)
    with h5py.File(res / "tracking.h5") as f:
        n_points = f["point_positions"].shape[0]
    assert got["tracked_points"].shape[1] == n_points
    assert not list(res.glob(".*tmp-*"))
