"""Failure behaviour of the real workflow: keep-going, kill -9 and resume, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from test_workflow import REPO, SNAKEMAKE, snakemake

CONFIG = """
sessions: config/sessions.tsv
roi_sets:
  face:
    face: [[60, 50], [260, 50], [260, 190], [60, 190]]
tracking:
  progress_every: 50
"""


def workdir(tmp: Path, rows: list[str], config: str = CONFIG, header: str = "session\tvideos\trois") -> Path:
    (tmp / "config").mkdir(parents=True)
    (tmp / "config" / "config.yaml").write_text(config)
    (tmp / "config" / "sessions.tsv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return tmp


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from facerhythm_core.demo import write_demo_video

    p = tmp_path_factory.mktemp("vid") / "face.mp4"
    write_demo_video(p, n_frames=600)
    return p


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """Long enough that tracking runs for seconds after its first progress lines (600 frames
    track in about one second, less than the orphan check's interval: a race, not a test)."""
    from facerhythm_core.demo import write_demo_video

    p = tmp_path_factory.mktemp("longvid") / "face.mp4"
    write_demo_video(p, n_frames=6000)
    return p


@pytest.mark.slow
def test_failing_session_does_not_stop_others(tmp_path, video):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 255, 4000, dtype=np.uint8).tobytes())
    wd = workdir(tmp_path / "wd", [f"bad\t{junk}\tconfig:face", f"good\t{video}\tconfig:face"])
    r = snakemake(wd, "-j2", "--keep-going", "results/bad/rois.h5", "results/good/rois.h5", check=False)
    assert r.returncode != 0
    assert (wd / "results/good/rois.h5").exists()
    assert not (wd / "results/bad").exists() or not list((wd / "results/bad").iterdir())
    log = (wd / "logs/probe_videos/bad.log").read_text()
    assert "junk.mp4" in log and "valid video file" in log
    summary = (wd / "logs/run_summary.tsv").read_text().splitlines()
    row = next(ln for ln in summary if ln.startswith("bad\tprobe_videos"))
    assert "\tfailed\t" in row and "junk.mp4" in row
    assert any(ln.startswith("good\trois\tdone") for ln in summary)


def _tracks(path):
    with h5py.File(path) as f:
        return {k: f["points_tracked"][k][()] for k in f["points_tracked"]}


@pytest.mark.slow
def test_kill_9_then_rerun_incomplete_gives_identical_output(tmp_path, video):
    rows = [f"m1\t{video}\tconfig:face"]
    target = "results/m1/tracking.h5"
    ref = workdir(tmp_path / "ref", rows)
    snakemake(ref, "-j2", target)

    wd = workdir(tmp_path / "killed", rows)
    snakemake(wd, "-j2", "results/m1/rois.h5")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(wd), "-j2", target]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log = wd / "logs/track_points/m1.log"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:  # kill once tracking is under way
            if log.exists() and "frame 100/" in log.read_text():
                break
            assert proc.poll() is None, "tracking finished before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("tracking never reported progress")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (wd / target).exists(), "a killed job left a file under the final name"
    assert list((wd / "results/m1").glob(".tracking.tmp-*.h5")), "the killed writer's temp file is expected"

    snakemake(wd, "--unlock")  # a killed Snakemake leaves its lock, as documented in the README
    snakemake(wd, "-j2", "--rerun-incomplete", target)
    a, b = _tracks(ref / target), _tracks(wd / target)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not list((wd / "results/m1").glob(".tracking.tmp-*")), "stale temp file not cleaned"


def _summary_rows(wd: Path) -> dict:
    """(session, stage) -> [status, log, error] of logs/run_summary.tsv (notes left out)."""
    rows = (wd / "logs/run_summary.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["session", "stage", "status", "log", "error", "notes"]
    return {tuple(r.split("\t")[:2]): r.split("\t")[2:5] for r in rows[1:]}


@pytest.mark.slow
def test_too_short_video_and_inconsistent_roi_file_stop_at_their_first_step(tmp_path, video, ffmpeg_cli):
    """A 2-frame video under padding 'same' and frames_freeze ranges beyond the video fail at
    probe time; an ROI file whose exampleImage is not the masks' size fails at the rois step.
    Each names the problem, nothing is written."""
    short = tmp_path / "two_frames.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=120",
            "-frames:v",
            "2",
            "-pix_fmt",
            "yuv420p",
            str(short),
        ],
        check=True,
    )
    roi_file = tmp_path / "ROIs.h5"
    with h5py.File(roi_file, "w") as f:
        m = np.zeros((240, 320), bool)
        m[50:190, 60:260] = True
        f["mask_images/mask_0"] = m
        f["exampleImage"] = np.zeros((100, 100, 3), np.uint8)  # drawn on another picture
    freeze = tmp_path / "grooming.txt"
    freeze.write_text("# grooming bouts\n10 20\n590 700\n")
    wd = workdir(
        tmp_path / "wd",
        [f"short\t{short}\tconfig:face\t", f"badroi\t{video}\t{roi_file}\t", f"freeze\t{video}\tconfig:face\t{freeze}"],
        CONFIG + "spectrogram:\n  padding: same\ntca:\n  rank: 40\n",
        header="session\tvideos\trois\tframes_freeze",
    )
    r = snakemake(
        wd,
        "-j2",
        "--keep-going",
        "results/short/rois.h5",
        "results/badroi/rois.h5",
        "results/freeze/rois.h5",
        check=False,
    )
    assert r.returncode != 0
    assert not (wd / "results/freeze/videos.json").exists()
    assert (
        f"frames_freeze {freeze}:3: range 590-700 must satisfy 0 <= start <= end < 600"
        in (wd / "logs/probe_videos/freeze.log").read_text()
    )
    assert not (wd / "results/short/videos.json").exists()
    assert not (wd / "results/badroi/rois.h5").exists()
    probe = (
        "two_frames.mp4 has 2 frame(s) (0.017 s at 120 Hz), too short for a spectrogram: with "
        "padding 'same' it needs at least 20 frames"
    )
    assert probe in (wd / "logs/probe_videos/short.log").read_text()
    # the 600-frame video is long enough to track, but its 30 time bins are too few for rank 40:
    # only the tca step needs them, so the probe warns and goes on
    assert (wd / "results/badroi/videos.json").exists()
    assert (
        "WARNING facerhythm.probe_videos: the tca step will fail on this session: session 'badroi': "
        f"{video} has 600 frames, which give 30 spectrogram time bin(s) (padding 'same', window "
        "481, downsample_factor 20), but TCA needs 40 along time (tca.rank 40), i.e. at least 781 "
        "frames"
    ) in (wd / "logs/probe_videos/badroi.log").read_text()
    roi = f"ROI file {roi_file}: exampleImage is 100x100 but the masks in mask_images are 320x240"
    assert roi in (wd / "logs/rois/badroi.log").read_text()
    rows = _summary_rows(wd)
    assert rows[("short", "probe_videos")][0] == "failed" and probe in rows[("short", "probe_videos")][2]
    assert rows[("badroi", "rois")][0] == "failed" and roi in rows[("badroi", "rois")][2]
    assert f"FAILED badroi (rois): ROIError: {roi}" in r.stderr


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except FileNotFoundError:
        return False
    return r.returncode == 0


@pytest.mark.slow
def test_full_disk_summary_shows_the_root_cause(tmp_path, video):
    """A real full disk (a 200 kB tmpfs) under the results: the summary and the FAILED line say
    'No space left on device', which HDF5 puts only on the second line of its error."""
    full = tmp_path / "full"
    if not _mount_tmpfs(full, "200k"):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        wd = workdir(tmp_path / "wd", [f"m1\t{video}\tconfig:face"], CONFIG + f"results_dir: {full}/results\n")
        r = snakemake(wd, "-j1", f"{full}/results/m1/rois.h5", check=False)
        assert r.returncode != 0
        assert not (full / "results/m1/rois.h5").exists()
        state, _, error = _summary_rows(wd)[("m1", "rois")][:3]  # status, log, error (then notes)
        assert state == "failed"
        assert error.endswith("; root cause: No space left on device (errno 28, ENOSPC)")
        failed = r.stderr[r.stderr.index("FAILED m1 (rois)") :].splitlines()
        assert failed[1].strip() == "root cause: No space left on device (errno 28, ENOSPC)"
    finally:
        subprocess.run(["umount", str(full)], check=False)


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid``, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_killed_snakemake_takes_its_running_job_with_it(tmp_path, long_video):
    """kill -9 of the Snakemake process alone (not its process group, as when a terminal or an
    SSH session dies): its running job stops within seconds instead of finishing unseen, and a
    rerun after --unlock redoes it."""
    target = "results/m1/tracking.h5"
    wd = workdir(tmp_path / "wd", [f"m1\t{long_video}\tconfig:face"])
    snakemake(wd, "-j2", "results/m1/rois.h5")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(wd), "-j2", target]
    head = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log = wd / "logs/track_points/m1.log"
    jobs: list[int] = []
    try:
        deadline = time.time() + 600
        while not (log.exists() and "frame 100/" in log.read_text()):
            assert head.poll() is None and time.time() < deadline, "tracking never got under way"
            time.sleep(0.2)
        jobs = _children(head.pid)
        assert jobs, "the tracking job is not a child of the Snakemake process"
        head.kill()  # the head only: its job is re-parented and would run on
        head.wait()
        deadline = time.time() + 15
        while any(_alive(j) for j in jobs) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(j) for j in jobs), "the orphaned job is still running"
    finally:
        for j in jobs:
            if _alive(j):
                os.kill(j, signal.SIGKILL)
    assert not (wd / target).exists(), "the orphaned job finished its output"
    assert "is gone; stopping this job" in log.read_text()

    snakemake(wd, "--unlock")
    snakemake(wd, "-j2", target)
    assert (wd / target).exists() and not list((wd / "results/m1").glob(".tracking.tmp-*"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_job_killed_without_an_error_reads_stopped(tmp_path, long_video):
    """A job killed from outside (as by the out-of-memory killer) logs no error: the summary
    says 'stopped', not 'not run', and the run prints a STOPPED line."""
    target = "results/m1/tracking.h5"
    wd = workdir(tmp_path / "wd", [f"m1\t{long_video}\tconfig:face"])
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(wd), "-j1", target]
    head = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log = wd / "logs/track_points/m1.log"
    try:
        deadline = time.time() + 600
        while not (log.exists() and "frame 100/" in log.read_text()):
            assert head.poll() is None and time.time() < deadline, "tracking never got under way"
            time.sleep(0.2)
        for job in _children(head.pid):
            os.kill(job, signal.SIGKILL)
        _, stderr = head.communicate(timeout=120)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
    assert head.returncode != 0
    state, _, error = _summary_rows(wd)[("m1", "track_points")][:3]
    assert (state, error) == ("stopped", "ended without an error message (killed, out of memory, or crashed?)")
    assert _summary_rows(wd)[("m1", "spectrogram")][0] == "not run"
    assert "STOPPED m1 (track_points): ended without an error message" in stderr
