"""probe_video reads a video's metadata with PyAV and gives torchcodec's numbers.

Every file here is made with the ffmpeg command line: containers, codecs, pixel
formats, time bases with a numerator above 1, B-frames, an irregular clock, a
display rotation. The PyAV probe must equal torchcodec's probe field for field (the
frame rate to the last bit: it becomes the analysis rate), and must not load
torchcodec.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from facerhythm_core.video import _probe_torchcodec, iter_frame_chunks, probe_video
from facerhythm_core.video_probe import probe_metadata

SRC = ["-f", "lavfi", "-i", "testsrc=size=96x64:rate=50", "-t", "2"]

VIDEOS = {
    "h264_120.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "120"],
    "mpeg4_30.avi": ["-c:v", "mpeg4", "-r", "30"],
    "ffv1_25.mkv": ["-c:v", "ffv1", "-r", "25"],
    "h264_ntsc.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "30000/1001"],
    "mjpeg_90.avi": ["-c:v", "mjpeg", "-r", "90"],
    "h264_444.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-r", "60"],
    "h264_gray_odd_rate.mkv": ["-c:v", "libx264", "-pix_fmt", "gray", "-r", "47.3"],
    "h264_bframes.mov": ["-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p", "-r", "24"],
    "h264_ms_timebase.mp4": ["-c:v", "libx264", "-bf", "2", "-r", "120", "-video_track_timescale", "1000"],
    "mpeg4_tb_num_1001.avi": ["-c:v", "mpeg4", "-r", "30000/1001"],
    "h264_tb_num_1001.avi": ["-c:v", "libx264", "-r", "24000/1001", "-pix_fmt", "yuv420p"],
    "raw_gray_7.avi": ["-c:v", "rawvideo", "-pix_fmt", "gray", "-r", "7"],
    "irregular_clock.mp4": [
        "-vf",
        "setpts='PTS+0.01*sin(N)/TB'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
    ],
}


IRREGULAR = {"irregular_clock.mp4", "h264_gray_odd_rate.mkv", "h264_ms_timebase.mp4"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory, ffmpeg_cli):
    d = tmp_path_factory.mktemp("probe")
    out = {}
    for name, args in VIDEOS.items():
        out[name] = d / name
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *SRC, *args, str(out[name])], check=True)
    rotated = d / "rotated_90.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(out["h264_120.mp4"]), "-c", "copy"]
        + ["-metadata:s:v:0", "rotate=90", str(rotated)],
        check=True,
    )
    out["rotated_90.mp4"] = rotated
    return out


@pytest.mark.parametrize("name", list(VIDEOS))
def test_pyav_probe_equals_torchcodec(videos, name):
    path = str(videos[name])
    # the PyAV path is the one under test where the container stores frame times and
    # the clock is regular; AVI's times are inferred by the demuxer, and irregular
    # clocks (also 47.3 or 120 Hz in milliseconds) go to torchcodec
    assert (probe_metadata(path) is None) == (name.endswith(".avi") or name in IRREGULAR)
    assert probe_video(path) == _probe_torchcodec(path)


def test_avi_frame_times_are_left_to_torchcodec(tmp_path, ffmpeg_cli):
    # PyAV's own FFmpeg infers this file's frame times one frame later than the system
    # FFmpeg does, which moves the average rate by one bit: torchcodec decides
    path = tmp_path / "h264_bframes_2s.avi"
    args = ["-c:v", "libx264", "-r", "24000/1001", "-pix_fmt", "yuv420p"]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *SRC, *args, str(path)], check=True)
    assert probe_metadata(str(path)) is None
    assert probe_video(path) == _probe_torchcodec(str(path))


def test_real_videos_probe_equals_torchcodec(real_videos):
    for path in real_videos.values():
        assert probe_metadata(str(path)) is not None
        assert probe_video(path) == _probe_torchcodec(str(path))


def test_rotated_video_is_probed_and_read_as_torchcodec_does(videos):
    path = str(videos["rotated_90.mp4"])
    assert probe_metadata(path) is None  # torchcodec rotates the frames; PyAV does not
    info = probe_video(path)
    assert info == _probe_torchcodec(path)
    assert (info.height, info.width) == (96, 64)  # the 96x64 source, turned
    from facerhythm_core.rgb_reader import iter_rgb_chunks

    ours = np.concatenate([c for _, c in iter_rgb_chunks(path, chunk_size=64)])
    ref = np.concatenate([c for _, c in iter_frame_chunks(path, chunk_size=64, gray=False)])
    assert ours.shape == ref.shape == (info.num_frames, 96, 64, 3)
    assert np.array_equal(ours, ref)


def test_probe_session_does_not_load_torchcodec(videos):
    code = (
        "import sys; from facerhythm_core.video import probe_session; "
        f"s = probe_session([{str(videos['h264_120.mp4'])!r}], timing='resample'); "
        "assert s.num_frames == [240], s.num_frames; "
        "print('torchcodec' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
