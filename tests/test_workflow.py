"""The real workflow: dry runs, config rejection, an end-to-end demo run, a no-op rerun."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir, *args, check=True, timeout=1800):
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
        )
    return r


def make_workdir(tmp: Path, config_text: str | None = None, sessions_text: str | None = None) -> Path:
    shutil.copytree(REPO / "config", tmp / "config")
    if config_text is not None:
        (tmp / "config" / "config.yaml").write_text(config_text)
    if sessions_text is not None:
        (tmp / "config" / "sessions.tsv").write_text(sessions_text)
    return tmp


def test_dry_run_lists_jobs_per_session(tmp_path):
    wd = make_workdir(tmp_path)
    r = snakemake(wd, "-n", "--quiet", "rules")
    out = r.stdout + r.stderr
    for rule, count in [
        ("demo_video", 4),
        ("probe_videos", 3),
        ("rois", 2),
        ("reference_image", 2),
        ("rois_from_template", 1),
        ("track_points", 3),
        ("spectrogram", 3),
        ("tca", 3),
        ("tca_joint", 1),
        ("plot_rois", 3),
        ("plot_tracking", 3),
        ("overlay_video", 3),
        ("plot_spectrograms", 3),
        ("plot_tca", 3),
        ("plot_tca_joint", 1),
        ("events", 3),
        ("plot_events", 3),
        ("nwb_export", 3),
    ]:
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [rule]), None)
        assert line is not None, f"{rule} missing from the dry run:\n{out}"
        assert int(line.split()[1]) == count, line


def test_bad_config_rejected_before_any_job(tmp_path):
    cfg = (REPO / "config" / "config.yaml").read_text() + "\ntrackign:\n  relaxation: 1\n"
    wd = make_workdir(tmp_path, config_text=cfg)
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert "trackign" in r.stderr + r.stdout
    assert not (wd / "results").exists()


def test_missing_video_rejected_at_dag_build(tmp_path):
    wd = make_workdir(tmp_path, sessions_text="session\tvideos\trois\nm1\tnowhere/video.mp4\tconfig:demo_face\n")
    cfg = re.sub(r"demo: \[[^\]]*\]", "{}", (REPO / "config" / "config.yaml").read_text())
    (wd / "config" / "config.yaml").write_text(cfg)
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert "session 'm1': video not found: nowhere/video.mp4" in r.stderr + r.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("demo_run"))
    r = snakemake(wd, "-j2")
    return wd, r


@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    wd, _ = demo_run
    res = wd / "results"
    for s in ("demo_mouseA", "demo_mouseB", "demo_mouseA_day2"):
        info = json.loads((res / s / "videos.json").read_text())
        assert info["frame_rate"] == 60.0
        assert [v["num_frames"] for v in info["videos"]] == [1320] * len(info["videos"])  # 22 s each
        with h5py.File(res / s / "rois.h5") as f:
            n = len(f["point_positions"])
            assert n > 100 and f["tracking_mask"][()].any()
            assert f["provenance"].attrs["stage"].startswith("rois")
        with h5py.File(res / s / "tracking.h5") as f:
            keys = sorted(f["points_tracked"])
            assert keys == (["0", "1"] if s == "demo_mouseA" else ["0"])
            for k in keys:
                p = f["points_tracked"][k][()]
                assert p.shape[1:] == (n, 2) and np.isfinite(p).all()
        with h5py.File(res / s / "spectrograms.h5") as f:
            for k in keys:
                assert f["spectrograms"][k].shape[:2] == (2, n)
        with h5py.File(res / s / "tca.h5") as f:
            assert "provenance" in f
            # decompositions keep their keys and are labelled by video file
            names = {
                "demo_mouseA": ["mouseA_1.mp4", "mouseA_2.mp4"],
                "demo_mouseB": ["mouseB_1.mp4"],
                "demo_mouseA_day2": ["mouseA_day2.mp4"],
            }[s]
            assert [f["decompositions"][k].attrs["label"] for k in keys] == names
        assert (res / s / "events.h5").exists() and (res / s / "figures" / "events.png").exists()
        assert (res / s / f"{s}.nwb").exists()
        for log in ("probe_videos", "rois", "track_points", "spectrogram", "tca", "events", "nwb_export"):
            assert (wd / "logs" / log / f"{s}.log").stat().st_size > 0
    assert (res / "joint" / "demo" / "tca.h5").exists()
    # nothing half-written is left behind
    assert not [p for p in res.rglob(".*tmp-*")]


@pytest.mark.slow
def test_demo_videos_are_distinct_and_events_match_the_demo(demo_run):
    import hashlib

    from facerhythm_core.demo import DEMO_EVENTS, DEMO_VIDEOS
    from facerhythm_core.events_table import read_events

    wd, _ = demo_run
    digests = {hashlib.sha256((wd / "resources" / "demo" / f"{v}.mp4").read_bytes()).hexdigest() for v in DEMO_VIDEOS}
    assert len(digests) == len(DEMO_VIDEOS)
    for s, want in DEMO_EVENTS.items():
        e = read_events(REPO / "config" / "events" / f"{s}.tsv")
        assert list(zip(e.time.tolist(), e.label)) == [(t, lab) for t, lab in want]


@pytest.mark.slow
def test_demo_events_recover_the_planted_licking(demo_run):
    """After each cue the jaw licks (6-7 Hz) for 1 s; catch events change nothing. The
    spectral power at the lick frequency and the TCA component that peaks there rise
    after cues, clear of their pre-event level, and not after catches."""
    from facerhythm_core.demo import DEMO_VIDEOS
    from facerhythm_core.events import read_events_h5

    wd, _ = demo_run
    lick = {"demo_mouseA": 6.0, "demo_mouseB": 7.0, "demo_mouseA_day2": 6.0}
    assert DEMO_VIDEOS["mouseB_1"]["rhythms"][2].frequency == 7.0
    for s, f_lick in lick.items():
        e = read_events_h5(wd / "results" / s / "events.h5")
        sp = e["spectral"]
        k = int(np.argmin(np.abs(sp["frequencies"] - f_lick)))
        lags = sp["lags"]
        after, before = (lags > 0.1) & (lags < 1.0), lags < -0.4
        face = sp["rois"].index("face")
        cue, catch = sp["cue"], sp["catch"]
        assert cue["attrs"]["n_events"] >= 3 and catch["attrs"]["n_events"] >= 3
        m = cue["mean"][:, face, k]
        assert m[after].max() > 2 * m[before].mean(), (s, m)
        assert cue["ci_low"][after, face, k].max() > cue["ci_high"][before, face, k].max(), s
        c = catch["mean"][:, face, k]
        assert c[after].max() < 1.5 * c[before].mean() + 1e-6, (s, c)
        for name, g in e["tca"].items():
            if name == "attrs":
                continue
            peaks = np.asarray(g["peak_frequency"])
            (r,) = np.flatnonzero(np.abs(peaks - f_lick) < 1.0)  # one licking component
            tl = g["lags"]
            a, b = (tl > 0.1) & (tl < 1.0), tl < -0.4
            mc = g["cue"]["mean"][:, r]
            assert mc[a].max() > 3 * mc[b].mean(), (s, name, mc)
    # edge events are listed and skipped, with their reason
    e = read_events_h5(wd / "results" / "demo_mouseA" / "events.h5")
    skipped = e["events"]["time"][e["spectral"]["cue"]["skipped_index"]].tolist()
    assert skipped == [1.0] and e["spectral"]["cue"]["skipped_reason"][0].startswith("edge:")
    assert "skipped" in (wd / "logs" / "events" / "demo_mouseA.log").read_text()


@pytest.mark.slow
def test_demo_nwb_files_pass_nwbinspector_and_read_back(demo_run):
    from facerhythm_core import nwb

    wd, _ = demo_run
    for s in ("demo_mouseA", "demo_mouseB", "demo_mouseA_day2"):
        path = wd / "results" / s / f"{s}.nwb"
        bad = [m for m in nwb.inspect_nwb(path) if m["importance"] in nwb.FAILING]
        assert bad == [], bad
        got = nwb.read_nwb_results(path)
        with h5py.File(wd / "results" / s / "tracking.h5") as f:
            keys = sorted(f["points_tracked"], key=int)
            pts = np.concatenate([f["points_tracked"][k][()] for k in keys])
        assert np.array_equal(got["tracked_points"], pts)
        assert got["subject"]["subject_id"] == ("mouseB" if s == "demo_mouseB" else "mouseA")
        assert sorted(got["events"]) == ["catch", "cue"]


@pytest.mark.slow
def test_second_run_does_nothing(demo_run):
    wd, _ = demo_run
    r = snakemake(wd, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_spreadsheet_sessions_table_runs(tmp_path):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, CRLF, an extra and a misspelled column."""
    rows = [
        "# cohort 1",
        "session\tvideos\trois\tgenotype\tFPS\t",
        "demo_mouseA\tresources/demo/mouseA_1.mp4;resources/demo/mouseA_2.mp4\tconfig:demo_face\tWT\t\t",
        "demo_mouseB\tresources/demo/mouseB_1.mp4\tconfig:demo_face\tKO\t90\t",
        "",
    ]
    wd = make_workdir(tmp_path)
    (wd / "config" / "sessions.tsv").write_bytes("\r\n".join(rows).encode("utf-16"))
    cfg = (REPO / "config" / "config.yaml").read_text()
    cfg = re.sub(r"(\nnwb:[^\n]*\n  enabled: )true", r"\1false", cfg)  # this table gives no start times
    (wd / "config" / "config.yaml").write_text(re.sub(r"demo: \[[^\]]*\]", "{}", cfg))
    r = snakemake(wd, "-n", "--quiet", "rules")
    out = r.stdout + r.stderr
    assert (
        "facerhythm warning: sessions table config/sessions.tsv, line 2 (the header): column 'FPS' "
        "is not a known column and is ignored; did you mean 'fps'?" in out
    )
    assert re.search(r"^probe_videos\s+2\b", out, re.M), out


def test_session_id_of_a_workflow_folder_rejected(tmp_path):
    wd = make_workdir(
        tmp_path, sessions_text="session\tvideos\trois\n\njoint\tresources/demo/mouseB_1.mp4\tconfig:demo_face\n"
    )
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert (
        "sessions table config/sessions.tsv, line 3, column 'session': session id 'joint' is "
        "reserved: results/joint/ holds the joint TCAs"
    ) in r.stderr + r.stdout
    assert not (wd / "results").exists()


def test_non_finite_config_number_rejected_before_any_job(tmp_path):
    cfg = (REPO / "config" / "config.yaml").read_text() + "\nvideo:\n  fps_clamp: .inf\n"
    wd = make_workdir(tmp_path, config_text=cfg)
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert "video.fps_clamp: inf is not a finite number" in r.stderr + r.stdout
    assert not (wd / "results").exists()
