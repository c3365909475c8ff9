"""NWB export: metadata rules, the written files against nwbinspector, read-back, and a
copy of an acquisition file. Stage files come from the real pipeline functions run on
small rendered videos; the export, events and figure rules run under Snakemake."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from facerhythm_core import nwb, nwb_clock, nwb_metadata, nwb_module
from facerhythm_core.errors import NWBError

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
H, W, FPS, N_FR = 96, 128, 60.0, 600  # two 10 s videos per session
SPEC = {"f_min": 2.0, "f_max": 20.0, "n_freq_bins": 12, "downsample_factor": 10}
CUES = (2.6, 5.6, 12.8, 15.6)  # session clock (s): licking for 1 s after each
CATCHES = (4.1, 7.0, 14.2)


# ----------------------------------------------------------------------------------
# metadata
# ----------------------------------------------------------------------------------


def test_start_time_needs_an_offset():
    t = nwb_metadata.parse_start_time("2024-03-01T10:00:00+01:00", "x")
    assert t.utcoffset() == dt.timedelta(hours=1)
    assert nwb_metadata.parse_start_time("2024-03-01T09:00:00Z", "x") == t
    with pytest.raises(NWBError, match="column line 3: '2024-03-01T10:00:00' has no UTC offset"):
        nwb_metadata.parse_start_time("2024-03-01T10:00:00", "column line 3")
    with pytest.raises(NWBError, match="not an ISO 8601"):
        nwb_metadata.parse_start_time("March 1st", "x")


def test_session_metadata_layers_config_session_and_table():
    cfg = {
        "enabled": True,
        "lab": "L",
        "session_start_time": "2024-01-01T00:00:00Z",
        "subject": {"species": "Mus musculus", "sex": "U"},
        "sessions": {"s1": {"subject": {"subject_id": "m1", "sex": "F"}, "session_start_time": "2024-02-02T00:00:00Z"}},
    }
    m = nwb_metadata.session_metadata(cfg, "s1")
    assert m["lab"] == "L" and m["session_start_time"] == "2024-02-02T00:00:00Z"
    assert m["subject"] == {"species": "Mus musculus", "sex": "F", "subject_id": "m1"}
    assert "nwb.sessions.s1" in m["start_time_source"]
    m = nwb_metadata.session_metadata(cfg, "s1", table_start="2024-03-03T00:00:00Z")
    assert m["session_start_time"] == "2024-03-03T00:00:00Z" and "sessions table" in m["start_time_source"]
    m = nwb_metadata.session_metadata(cfg, "s2")
    assert m["session_start_time"] == "2024-01-01T00:00:00Z" and m["subject"]["sex"] == "U"
    assert "enabled" not in m and "sessions" not in m


def test_check_export_names_sessions_without_a_start_time(tmp_path):
    from facerhythm_core.config import Session

    a = Session("a", ("v.mp4",), "config:x")
    b = Session("b", ("v.mp4",), "config:x", session_start_time="2024-01-01T10:00:00")
    c = Session("c", ("v.mp4",), "config:x", nwb=str(tmp_path / "nowhere.nwb"))
    d = Session("d", ("v.mp4",), "config:x", session_start_time="2024-01-01T10:00:00+00:00")
    assert nwb_metadata.check_export([a, b, c, d], {"enabled": False}) == []
    problems = nwb_metadata.check_export([a, b, c, d], {"enabled": True})
    assert len(problems) == 3
    assert problems[0].startswith("session 'a': NWB export (nwb.enabled) needs the session's start time")
    assert "session 'b'" in problems[1] and "has no UTC offset" in problems[1]
    assert "session 'c': acquisition NWB file not found" in problems[2]
    (tmp_path / "plain.h5").write_bytes(b"")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    e = Session("e", ("v.mp4",), "config:x", nwb=str(tmp_path / "plain.h5"))
    assert "not an NWB file" in nwb_metadata.check_export([e], {"enabled": True})[0]


def test_band_limits_bracket_each_filter():
    from facerhythm_core.vqt_filters import make_vqt_filters

    bank = make_vqt_filters(60.0, 4.0, 10.0, 1.0, 25.0, 10)
    lim = nwb_module.band_limits(bank.filters, 60.0)
    f = bank.freqs.astype(float)
    assert np.all(lim[:, 0] < f) and np.all(lim[:, 1] > f)
    width = lim[:, 1] - lim[:, 0]
    assert np.all(np.diff(width) > 0)  # wider bands at higher frequencies
    # Q = f / bandwidth lies between the bank's Q at f_min and at f_max, within a factor
    q = f / width
    assert 2.0 < q.min() and q.max() < 20.0


def test_times_and_clock():
    t = 3.0 + np.arange(10) / 60.0
    kw = nwb_module._times_kwargs(t)
    assert kw == {"starting_time": 3.0, "rate": pytest.approx(60.0)}
    t2 = t.copy()
    t2[5:] += 1.0
    assert np.array_equal(nwb_module._times_kwargs(t2)["timestamps"], t2)
    c = nwb_clock.Clock(np.array([0.0, 1.0, 2.0]), np.array([10.0, 12.0, 13.0]))
    assert np.allclose(c([0.5, 1.5, -1.0, 3.0]), [11.0, 12.5, 8.0, 14.0])
    assert np.array_equal(nwb_clock.Clock()([1.0, 2.0]), [1.0, 2.0])


def _in_memory_file(series):
    from pynwb import NWBFile

    f = NWBFile(
        session_description="x", identifier="x", session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    )
    for s in series:
        f.add_acquisition(s)
    return f


def test_acquisition_clock_from_image_series_frame_times():
    from pynwb.image import ImageSeries

    ours = [np.arange(5) / 10.0, 0.6 + np.arange(4) / 10.0]
    theirs = np.concatenate([50 + np.arange(5) / 10.0, 80 + np.arange(4) / 10.0])
    both = ImageSeries(
        name="cam",
        external_file=["raw/a.mp4", "raw/b.mp4"],
        starting_frame=[0, 5],
        format="external",
        timestamps=theirs,
        unit="n.a.",
    )
    c = nwb_clock.acquisition_clock(_in_memory_file([both]), ["x/a.mp4", "x/b.mp4"], ours)
    assert np.allclose(c(np.concatenate(ours)), theirs)
    assert np.isclose(c(0.5), 65.2)  # between the videos: interpolated
    assert "cam" in c.source

    # by rate, one series per video
    def by_rate(name, start, n):
        return ImageSeries(
            name=name,
            external_file=[f"{name}.mp4"],
            starting_frame=[0],
            format="external",
            rate=10.0,
            starting_time=start,
            unit="n.a.",
            num_samples=n,
        )

    c = nwb_clock.acquisition_clock(
        _in_memory_file([by_rate("a", 50.0, 5), by_rate("b", 80.0, 4)]), ["a.mp4", "b.mp4"], ours
    )
    assert np.allclose(c(np.concatenate(ours)), theirs)
    # none: the session clock; some: an error; a wrong frame count: an error
    assert nwb_clock.acquisition_clock(_in_memory_file([]), ["a.mp4", "b.mp4"], ours).ours is None
    with pytest.raises(NWBError, match=r"not for \['b.mp4'\]"):
        nwb_clock.acquisition_clock(_in_memory_file([by_rate("a", 50.0, 5)]), ["a.mp4", "b.mp4"], ours)
    short = ImageSeries(
        name="s",
        external_file=["a.mp4"],
        starting_frame=[0],
        format="external",
        timestamps=np.arange(3) / 10.0,
        unit="n.a.",
    )
    with pytest.raises(NWBError, match="has 3 frame time.* the video has 5 frames"):
        nwb_clock.acquisition_clock(_in_memory_file([short]), ["a.mp4"], ours[:1])


# ----------------------------------------------------------------------------------
# a small project: real videos, real tracking, spectrograms and TCA, in-process
# ----------------------------------------------------------------------------------


def _analyse(res: Path, videos: list[Path]) -> None:
    """What probe_videos, rois, track_points, spectrogram and tca write, by the same
    core functions, for one session."""
    from facerhythm_core import tca
    from facerhythm_core.demo import demo_polygons
    from facerhythm_core.rois import make_points, rois_from_polygons, save_rois_h5
    from facerhythm_core.spectrogram import compute_session_spectrograms
    from facerhythm_core.timing import read_timestamps_h5, stream_clocks, write_timestamps_h5
    from facerhythm_core.tracking_params import TrackingParams
    from facerhythm_core.tracking_session import track_session, write_tracking_h5
    from facerhythm_core.video import probe_session

    res.mkdir(parents=True)
    paths = [str(v) for v in videos]
    info = probe_session(paths, timing="resample")
    (res / "videos.json").write_text(json.dumps(info.to_dict()))
    write_timestamps_h5(
        res / "timestamps.h5",
        info.times,
        paths,
        [v.clock for v in info.videos],
        [v.timing["source"] for v in info.videos],
    )
    rois = rois_from_polygons(demo_polygons(H, W), (H, W))
    rois.point_positions = make_points([rois.masks["face"]], 12)
    save_rois_h5(res / "rois.h5", rois, extra={"tracking_mask": rois.masks["head"]})
    params = TrackingParams.from_config({"clahe": None})
    session = track_session(paths, rois.point_positions, rois.masks["head"], params, num_frames=info.num_frames)
    clocks = stream_clocks(read_timestamps_h5(res / "timestamps.h5"), False, "resample")
    with h5py.File(res / "tracking.h5", "w") as f:
        write_tracking_h5(f, session, frame_rate=info.frame_rate, clocks=clocks)
    compute_session_spectrograms(res / "tracking.h5", res / "spectrograms.h5", SPEC)
    spec = tca.load_spectrograms(res / "spectrograms.h5")
    result = tca.decompose(
        spec.spectrograms, videos="separate", rank=3, n_iter_max=100, random_state=0, std_divide=False
    )
    with h5py.File(res / "tca.h5", "w") as f:
        tca.write_tca_h5(
            f,
            result,
            frequencies=spec.frequencies,
            times=spec.times,
            point_positions=spec.point_positions,
            time_axes={"session_times": spec.session_times, "gap_fraction": spec.gap_fraction},
        )


def _acquisition_file(path: Path, videos: list[Path], frame_times: list[np.ndarray]) -> None:
    """An NWB file as a rig would write it: the video as an external-file ImageSeries
    with its frame times on the acquisition clock (the second video 5 s after the
    first: the time between trials), a lick sensor, and lick events of its own."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.event import EventsTable
    from pynwb.file import Subject
    from pynwb.image import ImageSeries

    f = NWBFile(
        session_description="rig recording",
        identifier="acq-1",
        session_start_time=dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4))),
        experimenter=["Rig, Person"],
        lab="rig lab",
        institution="rig institute",
        subject=Subject(subject_id="acqMouse", species="Mus musculus", sex="F", age="P60D"),
    )
    theirs = np.concatenate([100.0 + 1.001 * frame_times[0], 100.0 + 1.001 * frame_times[1] + 5.0])
    f.add_acquisition(
        ImageSeries(
            name="face_camera",
            external_file=[os.path.relpath(v, path.parent) for v in videos],
            format="external",
            starting_frame=[0, len(frame_times[0])],
            timestamps=theirs,
            unit="n.a.",
            description="face camera",
        )
    )
    f.add_acquisition(
        TimeSeries(
            name="lick_sensor", data=np.zeros(50), unit="V", rate=10.0, starting_time=100.0, description="lick contact"
        )
    )
    ev = EventsTable(name="cue", description="cue TTL")
    ev.add_event(timestamp=101.0)
    f.add_events_table(ev)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(f)


def _snakemake(root, *args, check=True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(root),
        "--rerun-triggers",
        "mtime",
        "--cores",
        "2",
        *args,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if check:
        assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def _config(root: Path, table: str, nwb_enabled: bool = True):
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "sessions.tsv").write_text(table)
    from facerhythm_core.demo import demo_polygons

    polys = demo_polygons(H, W)
    (root / "config" / "config.yaml").write_text(
        json.dumps(
            {
                "roi_sets": {"face": polys},
                "rois": {"point_spacing": 12, "point_rois": ["face"]},
                "spectrogram": SPEC,
                "tca": {"rank": 3, "n_iter_max": 100, "std_divide": False},
                "events": {"pre": 0.5, "post": 1.2},
                "nwb": {
                    "enabled": nwb_enabled,
                    "experimenter": ["Doe, Jane"],
                    "lab": "test lab",
                    "institution": "test institute",
                    "subject": {"species": "Mus musculus", "sex": "M", "age": "P90D"},
                    "sessions": {"plain": {"subject": {"subject_id": "m1"}}},
                },
            }
        )
    )


TABLE = (
    "session\tvideos\trois\tevents\tnwb\tsession_start_time\n"
    "plain\tvideos/m_1.mp4;videos/m_2.mp4\tconfig:face\tevents.tsv\t\t2024-03-04T10:00:00+01:00\n"
    "acq\tvideos/m_1.mp4;videos/m_2.mp4\tconfig:face\tevents.tsv\tacq.nwb\t\n"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from facerhythm_core.demo import Rhythm, write_demo_video

    root = tmp_path_factory.mktemp("nwb_project")
    rhythms = (
        Rhythm("whisker_pad", (0.30, 0.45), 0.12, 8.0, (1.5, 0.0)),
        Rhythm("jaw", (0.55, 0.72), 0.12, 5.0, (0.3, 1.5), onsets=CUES, on_duration=1.0),
    )
    videos = [root / "videos" / "m_1.mp4", root / "videos" / "m_2.mp4"]
    videos[0].parent.mkdir()
    for i, v in enumerate(videos):
        write_demo_video(
            v, n_frames=N_FR, fps=FPS, height=H, width=W, seed=0, t0=10.0 * i, noise_seed=10 + i, rhythms=rhythms
        )
    rows = (
        ["time\tlabel\ttrial"]
        + [f"{t}\tcue\t{i}" for i, t in enumerate(CUES)]
        + [f"{t}\tcatch\t{i}" for i, t in enumerate(CATCHES)]
    )
    (root / "events.tsv").write_text("\n".join(rows) + "\n")
    _analyse(root / "results" / "plain", videos)
    shutil.copytree(root / "results" / "plain", root / "results" / "acq")
    from facerhythm_core.timing import read_timestamps_h5

    times = [v["times"] for v in read_timestamps_h5(root / "results" / "plain" / "timestamps.h5")]
    _acquisition_file(root / "acq.nwb", videos, times)
    digest = hashlib.sha256((root / "acq.nwb").read_bytes()).hexdigest()
    mtime = (root / "acq.nwb").stat().st_mtime_ns
    _config(root, TABLE)
    r = _snakemake(
        root,
        "results/plain/plain.nwb",
        "results/acq/acq.nwb",
        "results/plain/events.h5",
        "results/plain/figures/events.png",
    )
    return {"root": root, "digest": digest, "mtime": mtime, "times": times, "log": r.stdout + r.stderr}


@pytest.mark.slow
def test_export_rules_ran_alone_and_files_pass_nwbinspector(project):
    root = project["root"]
    log = project["log"]
    for rule in ("track_points", "spectrogram", "tca", "probe_videos"):
        assert f"rule {rule}:" not in log  # the analysis files were taken as they are
    for s in ("plain", "acq"):
        msgs = nwb.inspect_nwb(root / "results" / s / f"{s}.nwb")
        bad = [m for m in msgs if m["importance"] in nwb.FAILING]
        assert bad == [], bad
        text = (root / "logs" / "nwb_export" / f"{s}.log").read_text()
        assert "wrote" in text and "nwbinspector BEST_PRACTICE_VIOLATION" not in text
    assert not list((root / "results").rglob(".*tmp-*"))


@pytest.mark.slow
def test_new_file_reads_back_to_the_results(project):
    from facerhythm_core.events_align import roi_power
    from facerhythm_core.plots import points_in_masks
    from facerhythm_core.rois import load_rois_h5
    from facerhythm_core.tca import read_tca_h5

    res = project["root"] / "results" / "plain"
    got = nwb.read_nwb_results(res / "plain.nwb")
    assert got["session_start_time"] == "2024-03-04T10:00:00+01:00"
    assert got["subject"] == {"subject_id": "m1", "species": "Mus musculus", "sex": "M", "age": "P90D"}
    with h5py.File(res / "tracking.h5") as f:
        pts = np.concatenate([f["points_tracked"][k][()] for k in ("0", "1")])
        times = np.concatenate([f["timestamps"][k][()] for k in ("0", "1")])
        home = f["point_positions"][()]
    assert np.array_equal(got["tracked_points"], pts)
    assert np.allclose(got["tracked_points_times"], times, atol=1e-9)
    assert np.allclose(got["points"]["home_x"], home[:, 0]) and got["points"]["in_face"].all()
    rois = load_rois_h5(res / "rois.h5")
    member = {k: v for k, v in points_in_masks(home, rois.masks).items() if v.any()}
    assert got["rois"] == list(member)
    with h5py.File(res / "spectrograms.h5") as f:
        power = np.concatenate([roi_power(f["spectrograms"][k], member) for k in ("0", "1")])
        st = np.concatenate([f["session_times"][k][()] for k in ("0", "1")])
        freqs = f["frequencies"][()]
    assert np.allclose(got["spectral_power"], power, rtol=1e-6)
    assert np.allclose(got["spectral_times"], st, atol=1e-9)
    assert np.allclose(got["frequencies"], freqs)
    assert np.all(got["band_limits"][:, 0] < freqs) and np.all(got["band_limits"][:, 1] > freqs)
    tca = read_tca_h5(res / "tca.h5")
    assert sorted(got["tca"]) == ["tca_m_1.mp4", "tca_m_2.mp4"]
    for key, name in (("0", "tca_m_1.mp4"), ("1", "tca_m_2.mp4")):
        d, g = tca[key], got["tca"][name]
        assert np.allclose(g["time"], d["factors"]["time"])
        assert np.allclose(g["times"], d["session_times"][key], atol=1e-9)
        assert np.allclose(g["x_loading"], d["factors"]["points_x"])
        assert np.allclose(g["y_loading"], d["factors"]["points_y"])
        assert np.allclose(g["frequency_loading"], d["factors"]["frequency"])
        assert np.allclose(g["explained_variance_ratio"], d["evr"])
    ev = got["events"]
    assert sorted(ev) == ["catch", "cue"]
    assert np.allclose(ev["cue"]["timestamp"], CUES) and np.allclose(ev["catch"]["timestamp"], CATCHES)
    assert ev["cue"]["trial"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_acquisition_copy_keeps_the_original_and_its_clock(project):
    root = project["root"]
    assert hashlib.sha256((root / "acq.nwb").read_bytes()).hexdigest() == project["digest"]
    assert (root / "acq.nwb").stat().st_mtime_ns == project["mtime"]
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(root / "results" / "acq" / "acq.nwb"), "r") as io:
        f = io.read()
        assert f.identifier == "acq-1" and f.subject.subject_id == "acqMouse"
        assert f.session_start_time.utcoffset() == dt.timedelta(hours=-4)
        assert "face_camera" in f.acquisition and "lick_sensor" in f.acquisition
        their_frames = f.acquisition["face_camera"].timestamps[:]
        # the copy's external files still point at the videos (relative to the copy)
        ext = list(f.acquisition["face_camera"].external_file[:])
        assert ext == ["../../videos/m_1.mp4", "../../videos/m_2.mp4"]
        assert sorted(f.events) == ["catch", "cue", "cue_face_rhythm"]  # theirs kept
        assert f.events["cue"]["timestamp"].data[:].tolist() == [101.0]
    got = nwb.read_nwb_results(root / "results" / "acq" / "acq.nwb")
    # our frames on their clock: exactly their frame times
    assert np.allclose(got["tracked_points_times"], their_frames, atol=1e-9)
    ours = np.concatenate(project["times"])
    mapped = np.interp(np.asarray(CUES), ours, their_frames)
    assert np.allclose(got["events"]["cue_face_rhythm"]["timestamp"], mapped, atol=1e-9)
    assert got["events"]["cue_face_rhythm"]["timestamp"][-1] > 100 + 1.001 * CUES[-1] + 4.9  # 2nd video
    plain = nwb.read_nwb_results(root / "results" / "plain" / "plain.nwb")
    assert np.array_equal(got["tracked_points"], plain["tracked_points"])


@pytest.mark.slow
def test_events_rule_and_figure(project):
    from facerhythm_core.events import read_events_h5

    res = project["root"] / "results" / "plain"
    e = read_events_h5(res / "events.h5")
    assert e["attrs"]["pre"] == 0.5 and e["attrs"]["post"] == 1.2
    assert e["spectral"]["cue"]["attrs"]["n_events"] + e["spectral"]["cue"]["attrs"]["n_skipped"] == 4
    png = res / "figures" / "events.png"
    assert png.stat().st_size > 20_000
    assert "events" in (project["root"] / "logs" / "events" / "plain.log").read_text()


@pytest.mark.slow
def test_export_checks_at_dag_build(project, tmp_path):
    """Missing start time: an error only with export on; a bad events file: its line."""
    root = tmp_path
    (root / "videos").symlink_to(project["root"] / "videos")
    (root / "events.tsv").write_text("time\tlabel\n1.0\tcue\n25.0\tcue\n")
    table = "session\tvideos\trois\tevents\nplain\tvideos/m_1.mp4;videos/m_2.mp4\tconfig:face\t\n"
    _config(root, table)
    r = _snakemake(root, "-n", check=False)
    assert r.returncode != 0
    assert "session 'plain': NWB export (nwb.enabled) needs the session's start time" in r.stderr + r.stdout
    _config(root, table, nwb_enabled=False)
    assert _snakemake(root, "-n", check=False).returncode == 0
    _config(root, table.replace("config:face\t", "config:face\tevents.tsv"), nwb_enabled=False)
    r = _snakemake(root, "-n", check=False)
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "events file events.tsv, line 3, column `time`: 25 s is outside the session" in out
    assert not (root / "results").exists()
