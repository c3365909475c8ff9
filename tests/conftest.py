"""Shared fixtures: paths, the real videos, small synthetic videos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
REAL_VIDEOS = SHARED / "data" / "real_videos"
MIRROR = REAL_VIDEOS / "lightning_pose_mirror_mouse_test_vid.mp4"
OPENFIELD = REAL_VIDEOS / "dlc_openfield_m3v1mp4.mp4"


def ffmpeg_decode(path, h, w):
    """All frames of a video as (n, H, W, 3) RGB, decoded by the ffmpeg command line."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


def ffprobe_count(path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


@pytest.fixture(scope="session")
def real_videos():
    if not MIRROR.exists() or not OPENFIELD.exists():
        pytest.skip(f"shared real videos not found under {REAL_VIDEOS}")
    return {"mirror": MIRROR, "openfield": OPENFIELD}


@pytest.fixture(scope="session")
def ffmpeg_cli():
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe command line tools not installed")
    return True


@pytest.fixture(scope="session")
def demo_video(tmp_path_factory):
    """A short synthetic face video (120 fps, 320x240, 240 frames) and its truth."""
    from facerhythm_core.demo import write_demo_video

    p = tmp_path_factory.mktemp("demo") / "demo.mp4"
    truth = write_demo_video(p, n_frames=240)
    return p, truth
