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
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
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
    for rule, count in [("demo_video", 4), ("probe_videos", 3), ("rois", 2), ("reference_image", 2),
                        ("rois_from_template", 1), ("track_points", 3), ("spectrogram", 3), ("tca", 3),
                        ("tca_joint", 1), ("plot_rois", 3), ("plot_tracking", 3), ("overlay_video", 3),
                        ("plot_spectrograms", 3), ("plot_tca", 3), ("plot_tca_joint", 1)]:
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
        assert info["frame_rate"] == 120.0
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
        for log in ("probe_videos", "rois", "track_points", "spectrogram", "tca"):
            assert (wd / "logs" / log / f"{s}.log").stat().st_size > 0
    assert (res / "joint" / "demo" / "tca.h5").exists()
    # nothing half-written is left behind
    assert not [p for p in res.rglob(".*tmp-*")]


@pytest.mark.slow
def test_second_run_does_nothing(demo_run):
    wd, _ = demo_run
    r = snakemake(wd, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_spreadsheet_sessions_table_runs(tmp_path):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, CRLF, an extra and a misspelled column."""
    rows = ["# cohort 1", "session\tvideos\trois\tgenotype\tFPS\t",
            "demo_mouseA\tresources/demo/mouseA_1.mp4;resources/demo/mouseA_2.mp4\tconfig:demo_face\tWT\t\t",
            "demo_mouseB\tresources/demo/mouseB_1.mp4\tconfig:demo_face\tKO\t90\t", ""]
    wd = make_workdir(tmp_path)
    (wd / "config" / "sessions.tsv").write_bytes("\r\n".join(rows).encode("utf-16"))
    cfg = (REPO / "config" / "config.yaml").read_text()
    (wd / "config" / "config.yaml").write_text(re.sub(r"demo: \[[^\]]*\]", "{}", cfg))
    r = snakemake(wd, "-n", "--quiet", "rules")
    out = r.stdout + r.stderr
    assert "facerhythm warning: sessions table config/sessions.tsv, line 2 (the header): column 'FPS' " \
           "is not a known column and is ignored; did you mean 'fps'?" in out
    assert re.search(r"^probe_videos\s+2\b", out, re.M), out


def test_session_id_of_a_workflow_folder_rejected(tmp_path):
    wd = make_workdir(tmp_path, sessions_text="session\tvideos\trois\n\n"
                      "joint\tresources/demo/mouseB_1.mp4\tconfig:demo_face\n")
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert ("sessions table config/sessions.tsv, line 3, column 'session': session id 'joint' is "
            "reserved: results/joint/ holds the joint TCAs") in r.stderr + r.stdout
    assert not (wd / "results").exists()


def test_non_finite_config_number_rejected_before_any_job(tmp_path):
    cfg = (REPO / "config" / "config.yaml").read_text() + "\nvideo:\n  fps_clamp: .inf\n"
    wd = make_workdir(tmp_path, config_text=cfg)
    r = snakemake(wd, "-n", check=False)
    assert r.returncode != 0
    assert "video.fps_clamp: inf is not a finite number" in r.stderr + r.stdout
    assert not (wd / "results").exists()
