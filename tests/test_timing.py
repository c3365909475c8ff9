"""Real clocks: per-frame timestamps, irregular timing, dropped frames, cut-short copies.

Videos are made with FFmpeg: the command line for a constant-rate clip, frames dropped
with `select`, and a faststart MP4 cut short; libx264 through PyAV for a variable-rate
clip whose frames carry chosen presentation times.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from facerhythm_core.config import Session, check_timestamp_files
from facerhythm_core.errors import ConfigError, VideoError
from facerhythm_core.timing import (
    UniformGrid,
    bin_gap_fraction,
    load_timestamp_file,
    read_container_timestamps,
    session_offsets,
    stream_clocks,
)
from facerhythm_core.timing_check import analyze_timestamps, check_timing
from facerhythm_core.video import iter_frame_chunks, probe_session


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ffmpeg_cli):
    d = tmp_path_factory.mktemp("clocks")
    reg = d / "regular.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=30",
        "-t",
        "40",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-movflags",
        "+faststart",
        reg,
    )
    drop = d / "dropped.mp4"  # frames 100-129 dropped, the others keep their times
    ffmpeg(
        "-i",
        reg,
        "-vf",
        "select='not(between(n,100,129))'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-movflags",
        "+faststart",
        drop,
    )
    cut = d / "cut.mp4"  # an interrupted copy: the first 60 % of the bytes
    with open(cut, "wb") as fh:
        subprocess.run(["head", "-c", str(int(reg.stat().st_size * 0.6)), str(reg)], stdout=fh, check=True)
    return {"regular": reg, "dropped": drop, "cut": cut, "dir": d}


def write_vfr_video(path: Path, times: np.ndarray, rhythm_hz: float = 8.0, size=(240, 320)):
    """The synthetic face with a planted rhythm, frames taken at ``times`` (s), encoded
    with FFmpeg's libx264 through PyAV with those presentation times (a variable-frame-
    rate MP4; the ffmpeg command line's concat demuxer rounds image durations)."""
    from fractions import Fraction

    import av

    from facerhythm_core.demo import Rhythm, render_frames

    rhythms = (Rhythm("pad", (0.45, 0.5), 0.12, rhythm_hz, (1.5, 0.0)),)
    tb = Fraction(1, 90000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(1 / np.median(np.diff(times))))
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.codec_context.time_base = stream.time_base = tb
        for t, rgb in zip(times, render_frames(0, height=size[0], width=size[1], rhythms=rhythms, times=times)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(round(t / tb)), tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def vfr_times(n=900, mean_rate=60.0, seed=3):
    """A webcam-like clock: intervals spread +-40 % around the mean, no gaps."""
    rng = np.random.default_rng(seed)
    return np.concatenate([[0.0], np.cumsum(rng.uniform(0.6, 1.4, n - 1) / mean_rate)])


# --------------------------------------------------------------------------- judging


def test_small_jitter_counts_as_regular():
    t = np.arange(1000) / 120 + np.random.default_rng(0).uniform(-0.1, 0.1, 1000) / 120
    tm = analyze_timestamps(t, "file")
    assert tm.regular and not tm.gaps
    assert tm.nominal_rate == pytest.approx(120, rel=0.01)
    assert check_timing(tm, "x.mp4", "strict") == "regular"


def test_gap_found_with_place_and_count():
    t = np.delete(np.arange(600) / 30.0, np.arange(200, 215))
    tm = analyze_timestamps(t, "packets", n_frames_header=585)
    assert not tm.regular and not tm.truncated
    assert [(g.after, g.n_missing) for g in tm.gaps] == [(199, 15)]
    assert tm.gaps[0].time == pytest.approx(199 / 30)
    assert tm.n_missing == 15


def test_variable_rate_is_irregular_and_strict_stops():
    tm = analyze_timestamps(vfr_times(), "packets")
    assert not tm.regular and not tm.gaps and tm.jitter_frames > 1
    with pytest.raises(VideoError, match=r"vfr\.mp4 has irregular frame timing.*strict"):
        check_timing(tm, "vfr.mp4", "strict")
    assert check_timing(tm, "vfr.mp4", "resample") == "resample"
    assert check_timing(tm, "vfr.mp4", "ignore") == "ignore"


def test_uniform_grid_interpolates_and_marks_gaps():
    t = np.delete(np.arange(300) / 100.0, np.arange(100, 120))  # 20 frames dropped
    grid = UniformGrid(t, 100.0)
    assert len(grid) == 300 and grid.times[-1] == pytest.approx(2.99)
    v = np.stack([3 * t + 1, -t], axis=1)[:, None, :]  # (T, 1, 2), linear in time
    out = grid.apply(v, axis=0)
    assert out.shape == (300, 1, 2)
    np.testing.assert_allclose(out[:, 0, 0], 3 * grid.times + 1, rtol=1e-5)
    assert grid.in_gap[100:120].all() and grid.in_gap.sum() == 20
    frac = bin_gap_fraction(grid.in_gap, np.array([50.0, 110.0, 250.0]), 40)
    assert frac[0] == 0 and frac[1] == pytest.approx(0.5) and frac[2] == 0


def test_session_offsets_back_to_back_and_user_clock():
    a = analyze_timestamps(np.arange(100) / 10.0, "packets")
    b = analyze_timestamps(np.arange(50) / 10.0, "packets")
    assert session_offsets([a, b], ["packets", "packets"]) == pytest.approx([0.0, 10.0])
    u1 = analyze_timestamps(100 + np.arange(100) / 10.0, "file")
    u2 = analyze_timestamps(130 + np.arange(100) / 10.0, "file")
    assert session_offsets([u1, u2], ["file", "file"]) == [0.0, 0.0]
    # a contiguous stream across 20 s of unrecorded time is resampled under `resample`
    vids = [
        {"times": 100 + np.arange(100) / 10.0, "clock": "regular"},
        {"times": 130 + np.arange(100) / 10.0, "clock": "regular"},
    ]
    assert stream_clocks(vids, True, "resample")["0"]["clock"] == "resample"
    assert stream_clocks(vids, True, "ignore")["0"]["clock"] == "regular"
    assert stream_clocks(vids, False, "resample")["1"]["clock"] == "regular"


# --------------------------------------------------------------------------- real files


def test_container_timestamps_of_regular_and_real_videos(clips, real_videos):
    ct = read_container_timestamps(clips["regular"])
    assert ct.source == "packets" and len(ct.times) == 1200 == ct.n_frames_header
    tm = analyze_timestamps(ct.times, ct.source, ct.n_frames_header, ct.duration_header, ct.header_rate)
    assert tm.regular and not tm.truncated and tm.nominal_rate == pytest.approx(30)
    for path, n, rate in [(real_videos["openfield"], 2330, 30.0003), (real_videos["mirror"], 994, 250)]:
        info = probe_session([path], timing="strict")
        assert info.videos[0].clock == "regular" and info.videos[0].num_frames == n
        assert info.times[0][0] == 0 and info.times[0][-1] == pytest.approx((n - 1) / rate, rel=1e-4)


def test_dropped_frames_found_at_the_right_place(clips, caplog):
    info = probe_session([clips["dropped"]], timing="resample")
    v = info.videos[0]
    assert v.num_frames == 1170 and v.clock == "resample"
    gaps = v.timing["gaps"]
    assert [(g["after"], g["n_missing"]) for g in gaps] == [(99, 30)]
    assert gaps[0]["time"] == pytest.approx(99 / 30, abs=1e-3)
    assert v.fps == pytest.approx(30)  # nominal, not the container's 29.25 average
    assert any("irregular timing" in w for w in info.warnings)
    with pytest.raises(VideoError, match=r"dropped\.mp4 has irregular.*30 after frame 99"):
        probe_session([clips["dropped"]], timing="strict")


def test_cut_short_copy_names_both_counts(clips, caplog):
    with pytest.raises(VideoError) as err:
        probe_session([clips["cut"]], timing="resample")
    msg = str(err.value)
    assert "cut.mp4 looks cut short" in msg and "1200 frames" in msg
    assert "video.allow_truncated: true" in msg
    n_dec = int(msg.split("only ")[1].split()[0])
    assert 500 < n_dec < 1200
    with caplog.at_level(logging.WARNING):
        info = probe_session([clips["cut"]], timing="resample", allow_truncated=True)
    assert info.videos[0].num_frames == n_dec and info.allow_truncated
    assert any("cut short" in w for w in info.warnings)
    # every frame the probe promises decodes, to the last one
    got = sum(len(fr) for _, fr in iter_frame_chunks(clips["cut"], chunk_size=64, n_frames=n_dec))
    assert got == n_dec


def test_timestamp_files_checked(clips, tmp_path):
    ok = tmp_path / "ok.npy"
    np.save(ok, 5.0 + np.arange(1200) / 29.97)
    s = Session("s1", (str(clips["regular"]),), "config:x", timestamps=(str(ok),))
    assert check_timestamp_files(s, cache_dir=tmp_path / "cache") == []
    assert (tmp_path / "cache" / "frame_counts.json").exists()
    short = tmp_path / "short.txt"
    short.write_text("time\n" + "\n".join(str(i / 30) for i in range(1000)) + "\n")
    s = Session("s1", (str(clips["regular"]),), "config:x", timestamps=(str(short),))
    (p,) = check_timestamp_files(s, cache_dir=tmp_path / "cache")
    assert "short.txt has 1000 times but video" in p and "1200 decodable frames" in p
    back = tmp_path / "back.csv"
    back.write_text("t,ttl\n0.0,1\n0.1,1\n0.05,1\n")
    with pytest.raises(ConfigError, match=r"back\.csv, line 4: not strictly increasing"):
        load_timestamp_file(back)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([0.0, np.nan, 0.2]))
    with pytest.raises(ConfigError, match=r"nan\.npy, index 1: nan is not a finite number"):
        load_timestamp_file(nan)
    word = tmp_path / "word.txt"
    word.write_text("0.0\n0.1\nabc\n")
    with pytest.raises(ConfigError, match=r"word\.txt, line 3: 'abc' is not a number"):
        load_timestamp_file(word)


def test_user_timestamps_set_the_session_clock(clips, tmp_path):
    t = 1000.0 + np.arange(1200) / 29.97
    f = tmp_path / "ttl.npy"
    np.save(f, t)
    info = probe_session([clips["regular"], clips["regular"]], timestamp_files=[f, f], timing="resample")
    assert info.videos[0].timing["source"] == "file"
    np.testing.assert_array_equal(info.times[0], t)
    assert info.frame_rate == pytest.approx(29.97)
    with pytest.raises(ConfigError, match="has 1200 times but video"):
        probe_session([clips["cut"]], timestamp_files=[f], timing="resample", allow_truncated=True)
    # two trials 60 s apart on the acquisition clock, tracked as one stream: warned
    g = tmp_path / "ttl2.npy"
    np.save(g, t + 100.0)
    info = probe_session(
        [clips["regular"], clips["regular"]], timestamp_files=[f, g], timing="resample", contiguous=True
    )
    assert info.times[1][0] - info.times[0][-1] == pytest.approx(100 - 1199 / 29.97, rel=1e-6)
    (w,) = [w for w in info.warnings if "tracked contiguously" in w]
    assert "apart on the session clock" in w


# --------------------------------------------------------------------------- the stages


def _track_and_spectrogram(video, tmp_path, timing, fs=None, spec_cfg=None):
    """probe -> track -> spectrogram through the same core calls as the rules."""
    from facerhythm_core.demo import demo_polygons
    from facerhythm_core.rois import make_points, polygon_mask
    from facerhythm_core.spectrogram import compute_session_spectrograms
    from facerhythm_core.timing import read_timestamps_h5, write_timestamps_h5
    from facerhythm_core.tracking_params import TrackingParams
    from facerhythm_core.tracking_session import track_session, write_tracking_h5

    info = probe_session([video], timing=timing)
    ts = tmp_path / "timestamps.h5"
    write_timestamps_h5(
        ts,
        info.times,
        [v.path for v in info.videos],
        [v.clock for v in info.videos],
        [v.timing["source"] for v in info.videos],
    )
    poly = demo_polygons(info.height, info.width)
    mask = polygon_mask(np.asarray(poly["face"]), (info.height, info.width))
    points = make_points(mask, 12)
    tr = tmp_path / "tracking.h5"
    with h5py.File(tr, "w") as f:
        session = track_session([str(video)], points, mask, TrackingParams(), num_frames=info.num_frames)
        clocks = stream_clocks(read_timestamps_h5(ts), False, timing)
        write_tracking_h5(f, session, frame_rate=info.frame_rate, clocks=clocks)
    out = tmp_path / "spectrograms.h5"
    cfg = {"f_min": 2.0, "f_max": 20.0, "n_freq_bins": 40, "downsample_factor": 10, **(spec_cfg or {})}
    compute_session_spectrograms(tr, out, cfg)
    return info, out


def _peak_frequency(spec_path):
    with h5py.File(spec_path) as f:
        s = f["spectrograms/0"][()]  # (2, N, F, T')
        freqs = f["frequencies"][()]
    power = s.mean(axis=(0, 1, 3))
    tilt = freqs**0.5  # undo the 1/f tilt's emphasis
    return freqs, freqs[np.argmax(power / tilt)]


@pytest.mark.slow
def test_variable_rate_rhythm_lands_in_its_bin(tmp_path, ffmpeg_cli):
    video = write_vfr_video(tmp_path / "vfr.mp4", vfr_times(), rhythm_hz=8.0)
    info, spec = _track_and_spectrogram(video, tmp_path, "resample")
    assert info.videos[0].clock == "resample"
    freqs, peak = _peak_frequency(spec)
    k = int(np.argmin(np.abs(freqs - 8.0)))
    assert abs(int(np.argmin(np.abs(freqs - peak))) - k) <= 1, (peak, freqs[k - 1 : k + 2])
    with h5py.File(spec) as f:
        st = f["session_times/0"][()]
        assert f["session_times/0"].attrs["clock"] == "resample"
        assert np.all(np.diff(st) > 0) and st[-1] <= info.times[0][-1]
        assert not f["gap_fraction/0"][()].any()
    # the same video treated as a perfect clock puts the rhythm elsewhere
    (tmp_path / "ignore").mkdir()
    _, spec_ign = _track_and_spectrogram(video, tmp_path / "ignore", "ignore")
    _, peak_ign = _peak_frequency(spec_ign)
    assert abs(peak_ign - 8.0) > abs(peak - 8.0)


@pytest.mark.slow
def test_regular_video_gives_the_same_datasets_as_before(tmp_path, demo_video):
    """A regular clock changes nothing: the spectrogram datasets equal those computed
    from a tracking file without timestamps (the path every run took before)."""
    video, _ = demo_video
    info, spec = _track_and_spectrogram(
        video, tmp_path, "resample", spec_cfg={"f_min": 4.0, "f_max": 30.0, "n_freq_bins": 20}
    )
    assert info.videos[0].clock == "regular"
    old = tmp_path / "old.h5"
    with h5py.File(tmp_path / "tracking.h5", "a") as f:
        del f["timestamps"]
    from facerhythm_core.spectrogram import compute_session_spectrograms

    compute_session_spectrograms(
        tmp_path / "tracking.h5", old, {"f_min": 4.0, "f_max": 30.0, "n_freq_bins": 20, "downsample_factor": 10}
    )
    with h5py.File(spec) as a, h5py.File(old) as b:
        for name in ("spectrograms/0", "x_axis/0", "times/0", "mean_power/0", "frequencies"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
        np.testing.assert_allclose(a["session_times/0"][()], b["times/0"][()], atol=1e-9)


# --------------------------------------------------------------------------- the workflow

WF_CONFIG = """
sessions: config/sessions.tsv
roi_sets:
  face:
    face: [[60, 50], [260, 50], [260, 190], [60, 190]]
spectrogram:
  f_min: 2.0
  f_max: 20.0
  n_freq_bins: 40
  downsample_factor: 10
"""


def _workdir(tmp: Path, rows: list[str], extra_config: str = "", header="session\tvideos\trois") -> Path:
    (tmp / "config").mkdir(parents=True)
    (tmp / "config" / "config.yaml").write_text(WF_CONFIG + extra_config)
    (tmp / "config" / "sessions.tsv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return tmp


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory, ffmpeg_cli):
    return write_vfr_video(tmp_path_factory.mktemp("vfr") / "webcam.mp4", vfr_times(), rhythm_hz=8.0)


@pytest.fixture(scope="module")
def dropped_face(tmp_path_factory, ffmpeg_cli):
    """The demo face at 60 fps with frames 300-359 dropped (ffmpeg select)."""
    from facerhythm_core.demo import write_demo_video

    d = tmp_path_factory.mktemp("drop")
    write_demo_video(d / "full.mp4", n_frames=900, fps=60.0)
    ffmpeg(
        "-i",
        d / "full.mp4",
        "-vf",
        "select='not(between(n,300,359))'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        d / "dropped.mp4",
    )
    return d / "dropped.mp4"


@pytest.mark.slow
def test_workflow_resamples_irregular_clocks_and_refuses_cut_copies(tmp_path, vfr_video, dropped_face, clips):
    from test_workflow import snakemake

    wd = _workdir(
        tmp_path,
        [f"vfr\t{vfr_video}\tconfig:face", f"drop\t{dropped_face}\tconfig:face", f"cut\t{clips['cut']}\tconfig:face"],
    )
    r = snakemake(
        wd,
        "-j2",
        "--keep-going",
        "results/vfr/tca.h5",
        "results/drop/spectrograms.h5",
        "results/cut/videos.json",
        check=False,
    )
    assert r.returncode != 0  # the cut copy fails, the others run
    freqs, peak = _peak_frequency(wd / "results/vfr/spectrograms.h5")
    k = int(np.argmin(np.abs(freqs - 8.0)))
    assert abs(int(np.argmin(np.abs(freqs - peak))) - k) <= 1, peak
    with h5py.File(wd / "results/vfr/tracking.h5") as f:
        assert f["timestamps/0"].attrs["clock"] == "resample"
        assert len(f["timestamps/0"]) == len(f["points_tracked/0"]) == 900
    with h5py.File(wd / "results/vfr/tca.h5") as f:
        st = f["decompositions/0/session_times/0"][()]
        assert len(st) == f["decompositions/0/factors/time"].shape[0] > 10
        assert np.all(np.diff(st) > 0)
        # the gap fraction travels beside the temporal factor (none in this video)
        assert f["decompositions/0/gap_fraction/0"].shape == st.shape
        assert not f["decompositions/0/gap_fraction/0"][()].any()
    # the dropped second shows in the spectrogram's gap fraction at the right time
    with h5py.File(wd / "results/drop/spectrograms.h5") as f:
        gap, st = f["gap_fraction/0"][()], f["session_times/0"][()]
    assert gap.max() > 0.05
    assert 4.0 < st[np.argmax(gap)] < 7.0  # frames 300-359 at 60 fps: 5-6 s
    assert gap[(st < 2.0) | (st > 10.0)].max() == 0
    log = (wd / "logs/probe_videos/cut.log").read_text()
    assert "cut.mp4 looks cut short: its header promises 1200 frames but only" in log
    summary = (wd / "logs/run_summary.tsv").read_text()
    row = next(ln for ln in summary.splitlines() if ln.startswith("vfr\tprobe_videos"))
    assert "irregular timing" in row and "clock: resample" in row

    # allow_truncated: the cut copy runs, and the summary says so
    wd2 = _workdir(tmp_path / "allow", [f"cut\t{clips['cut']}\tconfig:face"], "video:\n  allow_truncated: true\n")
    snakemake(wd2, "-j1", "results/cut/videos.json")
    row = next(
        ln for ln in (wd2 / "logs/run_summary.tsv").read_text().splitlines() if ln.startswith("cut\tprobe_videos")
    )
    assert "cut short" in row and "of 1200 frames decode" in row


@pytest.mark.slow
def test_workflow_strict_stops_and_bad_timestamp_files_fail_the_dag(tmp_path, vfr_video, clips):
    from test_workflow import snakemake

    wd = _workdir(tmp_path / "strict", [f"vfr\t{vfr_video}\tconfig:face"], "video:\n  timing: strict\n")
    r = snakemake(wd, "-j1", "results/vfr/videos.json", check=False)
    assert r.returncode != 0
    log = (wd / "logs/probe_videos/vfr.log").read_text()
    assert "webcam.mp4 has irregular frame timing" in log and "strict" in log
    assert not (wd / "results/vfr/videos.json").exists()

    stamps = tmp_path / "ttl.txt"
    stamps.write_text("\n".join(["0.0", "nan"] + [str(i / 30) for i in range(2, 1200)]) + "\n")
    wd = _workdir(
        tmp_path / "ttl", [f"s1\t{clips['regular']}\tconfig:face\t{stamps}"], header="session\tvideos\trois\ttimestamps"
    )
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert "ttl.txt, line 2" in r.stderr + r.stdout and "finite" in r.stderr + r.stdout
    stamps.write_text("\n".join(str(1000 + i / 30) for i in range(1199)) + "\n")
    r = snakemake(wd, "-n", check=False)
    assert "has 1199 times but video" in r.stderr + r.stdout and "1200 decodable frames" in r.stderr + r.stdout
    stamps.write_text("\n".join(str(1000 + i / 30) for i in range(1200)) + "\n")
    snakemake(wd, "-j1", "results/s1/videos.json")
    with h5py.File(wd / "results/s1/timestamps.h5") as f:
        np.testing.assert_allclose(f["timestamps/0"][()], 1000 + np.arange(1200) / 30)
        assert f["timestamps/0"].attrs["source"] == "file"
