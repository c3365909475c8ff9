"""Events files, event-aligned windows and the events stage on real stage files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from facerhythm_core import events as ev
from facerhythm_core import events_align, events_table
from facerhythm_core.errors import EventsError


def write(path, text):
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------
# reading and checking
# ----------------------------------------------------------------------------------


def test_read_tsv_and_csv_keep_extra_columns_and_lines(tmp_path):
    tsv = write(tmp_path / "a.tsv", "# licks and cues\ntime\tlabel\ttrial\n1.5\tcue\t1\n\n2.25\tlick\t1\n3\tcue\t2\n")
    e = events_table.read_events(tsv)
    assert e.time.tolist() == [1.5, 2.25, 3.0]
    assert e.label == ["cue", "lick", "cue"]
    assert e.labels == ["cue", "lick"]
    assert e.line.tolist() == [3, 5, 6]  # as an editor shows them
    assert e.extra == {"trial": ["1", "1", "2"]}
    csv = write(tmp_path / "b.csv", 'label,time,note\ncue,1.0,"a, quoted cell"\n')
    e = events_table.read_events(csv)
    assert e.time.tolist() == [1.0] and e.extra["note"] == ["a, quoted cell"]


def test_every_bad_row_is_named_by_file_line_and_column(tmp_path):
    p = write(
        tmp_path / "bad.tsv", "time\tlabel\n1.0\tcue\nabc\tcue\nnan\tcue\n2.0\t\n3.0\ta/b\n4.0\tcue\textra\ninf\tcue\n"
    )
    problems = events_table.check_events_file(p)
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert f"events file {p}, line 3, column `time`: 'abc' is not a number" in text
    assert "line 4, column `time`: 'nan' is not finite" in text
    assert "line 5, column `label`: empty" in text
    assert "line 6, column `label`: 'a/b' contains '/'" in text
    assert "line 7: 3 cell(s) but the header has 2 column(s)" in text
    assert "line 8, column `time`: 'inf' is not finite" in text
    with pytest.raises(EventsError, match="line 3"):
        events_table.read_events(p)


def test_missing_columns_and_events_outside_the_session(tmp_path):
    p = write(tmp_path / "cols.tsv", "Time\tlabel\n1\tcue\n")
    (msg,) = events_table.check_events_file(p)
    assert "line 1: no `time` column" in msg and "'Time'" in msg
    p = write(tmp_path / "out.csv", "time,label\n-0.5,cue\n1.0,cue\n12.5,cue\n")
    problems = events_table.check_events_file(p, extent=(0.0, 10.0))
    assert len(problems) == 2
    assert "line 2, column `time`: -0.5 s is outside the session (0.000-10.000 s" in problems[0]
    assert "line 4, column `time`: 12.5 s is outside" in problems[1]
    assert events_table.check_events_file(p, extent=(-1.0, 13.0)) == []
    assert events_table.check_events_file(tmp_path / "none.tsv")[0].endswith("not found")
    assert "empty" in events_table.check_events_file(write(tmp_path / "e.tsv", "# nothing\n"))[0]


def test_session_extent_matches_the_probed_session_clock(tmp_path):
    from facerhythm_core.demo import write_demo_video
    from facerhythm_core.video import probe_session

    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_demo_video(a, n_frames=30, fps=30.0, height=48, width=64)
    write_demo_video(b, n_frames=20, fps=30.0, height=48, width=64, t0=1.0)
    (lo, hi), step = events_table.session_extent([str(a), str(b)], cache_dir=tmp_path / "cache")
    info = probe_session([str(a), str(b)], timing="resample")
    assert lo == pytest.approx(info.times[0][0]) and hi == pytest.approx(info.times[-1][-1])
    assert hi == pytest.approx(49 / 30) and step == pytest.approx(1 / 30)
    assert (tmp_path / "cache" / "video_extents.json").exists()
    # cached: the same answer without the videos' packets (a changed file is read again)
    assert events_table.session_extent([str(a), str(b)], cache_dir=tmp_path / "cache") == ((lo, hi), step)
    # user timestamps are the session clock as they are
    ta, tb = (
        write(tmp_path / "a.txt", "\n".join(str(100 + i / 30) for i in range(30))),
        write(tmp_path / "b.txt", "\n".join(str(200 + i / 30) for i in range(20))),
    )
    (lo, hi), _ = events_table.session_extent([str(a), str(b)], [str(ta), str(tb)])
    assert (lo, hi) == (pytest.approx(100.0), pytest.approx(200 + 19 / 30))
    assert events_table.session_extent([str(tmp_path / "missing.mp4")]) is None


# ----------------------------------------------------------------------------------
# alignment
# ----------------------------------------------------------------------------------


def test_lag_axis():
    lags = events_align.lag_axis(0.25, 1.0, 2.0)
    assert lags[0] == -1.0 and lags[-1] == 2.0 and 0.0 in lags and len(lags) == 13
    lags = events_align.lag_axis(0.3, 1.0, 1.0)
    assert lags.min() >= -1.0 and lags.max() <= 1.0 and np.allclose(np.diff(lags), 0.3)
    with pytest.raises(EventsError):
        events_align.lag_axis(0.0, 1.0, 1.0)


def _stretch(name, t0, n, step, span, gap=None, offset=0.0):
    t = t0 + step * np.arange(n)
    # a ramp in column 0 and a sine in column 1: interpolation is checkable
    values = np.stack([t + offset, np.sin(t)], axis=1)
    return events_align.Stretch(name, t, values, gap, span)


def test_align_cuts_windows_and_names_every_skipped_event():
    step = 0.25
    s0 = _stretch("v0.mp4", 2.0, 65, step, (0.0, 20.0))  # bins 2-18 s
    gap = np.zeros(65)
    gap[20:24] = 0.5  # bins 31-31.75 s bridged
    s1 = _stretch("v1.mp4", 26.0, 65, step, (24.0, 42.0), gap=gap)  # bins 26-42 s
    lags = events_align.lag_axis(step, 1.0, 2.0)
    times = np.array([5.1, 1.0, 17.5, 22.0, 30.0, 35.0])
    a = events_align.align(times, [s0, s1], lags, recorded=[(0.0, 20.0), (24.0, 42.0)], max_gap_fraction=0.1)
    assert a.used.tolist() == [0, 5]
    assert a.traces.shape == (2, len(lags), 2) and a.traces.dtype == np.float32
    assert np.allclose(a.traces[0, :, 0], 5.1 + lags, atol=1e-5)  # linear: the ramp exactly
    assert np.allclose(a.traces[1, :, 0], 35.0 + lags, atol=1e-5)
    reasons = dict(a.skipped)
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[1].startswith("edge:") and "v0.mp4 (2.000-18.000 s)" in reasons[1]
    assert reasons[2].startswith("edge:")  # 17.5 + 2 s > 18 s
    assert "unrecorded" in reasons[3]
    assert reasons[4].startswith("timing gap: up to 50%")
    # a stretch that does not cover an event's video leaves it to another analysis
    b = events_align.align(times, [s0], lags, recorded=[(0.0, 20.0), (24.0, 42.0)])
    assert b.used.tolist() == [0] and b.n_elsewhere == 2 and len(b.skipped) == 3
    # gaps allowed up to the threshold
    c = events_align.align(np.array([30.0]), [s1], lags, recorded=[(24.0, 42.0)], max_gap_fraction=0.5)
    assert c.used.tolist() == [0]


def test_mean_ci_is_the_student_t_interval():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5, 3))
    mean, lo, hi = events_align.mean_ci(x, 0.9)
    half = stats.t.ppf(0.95, 6) * x.std(axis=0, ddof=1) / np.sqrt(7)
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(hi - mean, half) and np.allclose(mean - lo, half)
    m1, l1, h1 = events_align.mean_ci(x[:1])
    assert np.allclose(m1, x[0]) and np.isnan(l1).all() and np.isnan(h1).all()
    assert np.isnan(events_align.mean_ci(x[:0])[0]).all()


def test_roi_power_is_the_mean_over_points_and_axes_in_any_chunk():
    rng = np.random.default_rng(1)
    spec = rng.random((2, 11, 4, 6)).astype(np.float32)
    member = {"a": np.arange(11) < 4, "b": np.arange(11) % 2 == 1}
    want = np.stack([spec[:, m].mean(axis=(0, 1)) for m in member.values()])  # (roi, F, T)
    for chunk in (None, 1, 3, 64):
        got = events_align.roi_power(spec, member, chunk=chunk)
        assert got.shape == (6, 2, 4)
        assert np.allclose(got, want.transpose(2, 0, 1))
    assert np.allclose(events_align.roi_power(spec * 1j, member), want.transpose(2, 0, 1))  # magnitude


def test_stream_labels_name_videos_by_file(tmp_path):
    from facerhythm_core import tca
    from facerhythm_core.streams import decomposition_label, label_tca_h5, stream_labels, stream_spans

    assert stream_labels(["0", "1"], ["d/mouseA_1.mp4", "d/mouseA_2.mp4"]) == {"0": "mouseA_1.mp4", "1": "mouseA_2.mp4"}
    assert stream_labels(["0", "1"], ["day1/cam.mp4", "day2/cam.mp4"]) == {"0": "day1/cam.mp4", "1": "day2/cam.mp4"}
    assert stream_labels(["0"], ["a.mp4", "b.mp4"]) == {"0": "a.mp4 + b.mp4 (contiguous)"}
    assert decomposition_label("1", ["1"], {"0": "a.mp4", "1": "b.mp4"}) == "b.mp4"
    assert decomposition_label("all", ["0", "1"], {"0": "a.mp4", "1": "b.mp4"}) == "all videos"
    info = {"session_start": [0.0, 10.0], "session_end": [9.9, 19.9]}
    assert stream_spans(["0", "1"], info) == {"0": (0.0, 9.9), "1": (10.0, 19.9)}
    assert stream_spans(["0"], info) == {"0": (0.0, 19.9)}
    # tca.h5: group names stay the keys, the files become attributes
    rng = np.random.default_rng(0)
    data = {k: rng.random((2, 5, 4, 12)).astype(np.float32) for k in ("0", "1")}
    for videos, want in (("separate", {"0": "a.mp4", "1": "b.mp4"}), ("concatenate", {"all": "all videos"})):
        res = tca.decompose(data, videos=videos, rank=2, n_iter_max=5)
        with h5py.File(tmp_path / f"{videos}.h5", "w") as f:
            tca.write_tca_h5(f, res)
            assert label_tca_h5(f, ["v/a.mp4", "v/b.mp4"]) == want
        r = tca.read_tca_h5(tmp_path / f"{videos}.h5")
        for name, label in want.items():
            assert r[name]["attrs"]["label"] == label
        last = list(want)[-1]
        assert list(r[last]["attrs"]["element_labels"]) == (["b.mp4"] if videos == "separate" else ["a.mp4", "b.mp4"])


# ----------------------------------------------------------------------------------
# the stage, on stage files written by the real writers
# ----------------------------------------------------------------------------------

FS, DS, F = 60.0, 20, 12


def _session_files(tmp_path, with_gap=False):
    """A session of two videos (keys 0, 1) whose spectrograms carry a planted response:
    for 1.5 s after each cue, power at frequency bin 7 rises in the points of ROI
    'jaw'; catch events change nothing. TCA by the real decomposition, written by
    write_tca_h5; ROIs by save_rois_h5."""
    from facerhythm_core import tca
    from facerhythm_core.rois import ROISet, save_rois_h5

    rng = np.random.default_rng(0)
    H, W = 40, 60
    yy, xx = np.mgrid[0:8, 0:12]
    pts = np.stack([5 + 5 * xx.ravel(), 3 + 4.5 * yy.ravel()], 1).astype(np.float32)  # 96 points
    jaw_mask = np.zeros((H, W), bool)
    jaw_mask[20:, 30:] = True
    face_mask = np.ones((H, W), bool)
    empty = np.zeros((H, W), bool)
    save_rois_h5(
        tmp_path / "rois.h5", ROISet(masks={"face": face_mask, "jaw": jaw_mask, "none": empty}, point_positions=pts)
    )
    jaw = (pts[:, 0] >= 30) & (pts[:, 1] >= 20)
    n_frames = 1200  # 20 s per video
    starts = [0.0, 20.0]
    cues = {0: [4.0, 9.0, 14.0], 1: [24.5, 29.5, 34.0]}
    catches = {0: [6.5, 11.5], 1: [27.0, 32.0]}
    freqs = np.geomspace(1, 20, F).astype(np.float32)
    frames_win = 121
    spec, st, gf = {}, {}, {}
    for k in (0, 1):
        x_axis = np.arange(frames_win // 2, n_frames - frames_win // 2, DS)
        t = starts[k] + x_axis / FS
        s = 0.02 * rng.random((2, len(pts), F, len(t))).astype(np.float32)
        s[:, ~jaw, 2] += 0.5  # a steady rhythm outside the jaw
        for c in cues[k]:
            on = ((t >= c) & (t < c + 1.5)).astype(np.float32)
            s[:, jaw, 7, :] += 1.0 * on[None, None, :]
        spec[str(k)], st[str(k)] = s, t
        g = np.zeros(len(t), np.float32)
        if with_gap and k == 1:
            g[(t > 31.5) & (t < 32.5)] = 0.4  # the catch at 32 s sits in a gap
        gf[str(k)] = g
    with h5py.File(tmp_path / "spectrograms.h5", "w") as f:
        f.attrs["fs"] = FS
        f.create_dataset("frequencies", data=freqs)
        f.create_dataset("point_positions", data=pts)
        for k in spec:
            f.create_dataset(f"spectrograms/{k}", data=spec[k])
            f.create_dataset(f"session_times/{k}", data=st[k])
            f.create_dataset(f"gap_fraction/{k}", data=gf[k])
            f.create_dataset(f"times/{k}", data=st[k] - starts[int(k)])
    res = tca.decompose(spec, videos="separate", rank=3, n_iter_max=60, random_state=0, std_divide=False)
    with h5py.File(tmp_path / "tca.h5", "w") as f:
        tca.write_tca_h5(
            f,
            res,
            frequencies=freqs,
            times={k: st[k] - starts[int(k)] for k in st},
            point_positions=pts,
            time_axes={"session_times": st, "gap_fraction": gf},
        )
    info = {
        "frame_rate": FS,
        "videos": [{"path": "videos/m_1.mp4"}, {"path": "videos/m_2.mp4"}],
        "session_start": [0.0, 20.0],
        "session_end": [19.99, 39.99],
    }
    (tmp_path / "videos.json").write_text(json.dumps(info))
    rows = (
        ["time\tlabel\tside"]
        + [f"{c}\tcue\tleft" for k in cues for c in cues[k]]
        + [f"{c}\tcatch\tnone" for k in catches for c in catches[k]]
        + ["0.5\tcue\tleft"]
    )
    (tmp_path / "events.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _run(d, **params):
    out = d / "events.h5"
    ev.compute_session_events(
        d / "events.tsv",
        d / "tca.h5",
        d / "spectrograms.h5",
        d / "rois.h5",
        d / "videos.json",
        out,
        {"pre": 1.0, "post": 2.0, **params},
        session="m",
    )
    return ev.read_events_h5(out)


def test_events_stage_recovers_the_planted_response(tmp_path):
    e = _run(_session_files(tmp_path))
    assert e["labels"] == ["cue", "catch"]
    assert e["events"]["columns"]["side"][:2] == ["left", "left"]
    sp = e["spectral"]
    assert sp["rois"] == ["face", "jaw"]  # 'none' holds no point: left out
    lags, k = sp["lags"], 7
    cue, catch = sp["cue"], sp["catch"]
    assert cue["attrs"]["n_events"] == 6 and catch["attrs"]["n_events"] == 4
    # the cue at 0.5 s is listed as skipped (before the first time bin), not dropped
    assert cue["attrs"]["n_skipped"] == 1 and cue["skipped_reason"][0].startswith("edge:")
    assert e["events"]["time"][cue["skipped_index"][0]] == 0.5
    jaw = sp["rois"].index("jaw")
    after, before = (lags > 0.2) & (lags < 1.3), lags < -0.2
    m = cue["mean"][:, jaw, k]
    assert m[after].mean() > m[before].mean() + 0.5  # planted: +1.0 during the response
    assert cue["ci_low"][after, jaw, k].min() > cue["ci_high"][before, jaw, k].max()
    c = catch["mean"][:, jaw, k]
    assert abs(c[after].mean() - c[before].mean()) < 0.2
    assert cue["traces"].shape == (6, len(lags), 2, F)
    # each TCA decomposition: the component peaking at bin 7 responds to cues
    for name in ("0", "1"):
        g = e["tca"][name]
        assert g["attrs"]["label"] == f"m_{int(name) + 1}.mp4"
        (r,) = np.flatnonzero(np.isclose(g["peak_frequency"], sp["frequencies"][k]))
        tl = g["lags"]
        mc = g["cue"]["mean"][:, r]
        aft, bef = (tl > 0.2) & (tl < 1.3), tl < -0.2
        assert mc[aft].mean() > 2 * mc[bef].mean()
        assert g["cue"]["attrs"]["n_events"] == 3
        # the other video's events (incl. the skipped one at 0.5 s) belong to the other
        # decomposition: neither used nor skipped here
        assert g["cue"]["attrs"]["n_elsewhere"] == {"0": 3, "1": 4}[name]
        assert g["cue"]["attrs"]["n_skipped"] == {"0": 1, "1": 0}[name]
    cols = ev.figure_columns(e)
    assert [c["title"] for c in cols] == ["m_1.mp4: cue", "m_1.mp4: catch", "m_2.mp4: cue", "m_2.mp4: catch"]
    assert cols[0]["n"] == 3 and cols[0]["n_skipped"] == 1 and cols[0]["components"][r].startswith(f"C{r + 1} ")
    from PIL import Image

    from facerhythm_core import plots

    fig = plots.plot_event_triggered(cols, title="m")
    assert len(fig.axes) == 3 * 4  # rank rows x (decomposition, label) columns
    plots.save_figure(fig, tmp_path / "events.png")
    img = np.asarray(Image.open(tmp_path / "events.png").convert("RGB"))
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3)[::5], axis=0)) > 20


def test_events_in_a_timing_gap_are_listed_and_skipped(tmp_path):
    e = _run(_session_files(tmp_path, with_gap=True))
    catch = e["spectral"]["catch"]
    assert catch["attrs"]["n_events"] == 3
    t = e["events"]["time"][catch["skipped_index"]]
    assert t.tolist() == [32.0]
    assert catch["skipped_reason"][0].startswith("timing gap")
    e2 = _run(tmp_path, max_gap_fraction=0.5)
    assert e2["spectral"]["catch"]["attrs"]["n_events"] == 4


def test_events_stage_rejects_events_outside_the_session(tmp_path):
    d = _session_files(tmp_path)
    (d / "events.tsv").write_text("time\tlabel\n5.0\tcue\n45.0\tcue\n")
    with pytest.raises(EventsError, match=r"line 3, column `time`: 45 s is outside the session"):
        _run(d)
    assert not (d / "events.h5").exists()
    (d / "events.tsv").write_text("time\tlabel\n5.0\tcue\n")
    with h5py.File(d / "spectrograms.h5", "a") as f:
        del f["session_times"]
    with pytest.raises(EventsError, match="has no session_times .* re-run the spectrogram and tca rules"):
        _run(d)
