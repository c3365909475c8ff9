"""The streaming reader reads every frame of real files exactly."""

import subprocess

import numpy as np
import pytest

from conftest import ffmpeg_decode, ffprobe_count
from facerhythm_core.errors import VideoError
from facerhythm_core.video import iter_frame_chunks, probe_session, probe_video, read_frame, read_frames, to_gray


def _count(path, **kw):
    n = 0
    for s, chunk in iter_frame_chunks(path, **kw):
        assert s == kw.get("start", 0) + n  # chunks are contiguous
        n += len(chunk)
    return n


@pytest.mark.parametrize("name", ["mirror", "openfield"])
def test_frame_count_matches_ffprobe(real_videos, ffmpeg_cli, name):
    path = real_videos[name]
    expected = ffprobe_count(path)
    info = probe_video(path)
    assert info.num_frames == expected
    assert _count(path, chunk_size=97) == expected


def test_openfield_metadata(real_videos):
    info = probe_video(real_videos["openfield"])
    assert (info.height, info.width, info.channels) == (480, 640, 3)
    assert info.pixel_format == "yuv444p"
    assert info.fps == pytest.approx(1_000_000 / 33333, rel=1e-6)


def test_mirror_frames_equal_ffmpeg(real_videos, ffmpeg_cli):
    path = real_videos["mirror"]
    ref = ffmpeg_decode(path, 406, 396)
    got = np.concatenate([c for _, c in iter_frame_chunks(path, chunk_size=128, gray=False)])
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)


@pytest.fixture(scope="module")
def bframe_avi(tmp_path_factory, ffmpeg_cli):
    """H.264 with B-frames in AVI: torchcodec fails on its last frames and seeks early."""
    p = tmp_path_factory.mktemp("avi") / "bframes.avi"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=120",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-bf",
            "3",
            "-pix_fmt",
            "yuv420p",
            str(p),
        ],
        check=True,
    )
    return p


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_bframe_avi_every_frame_exact(bframe_avi, chunk):
    ref = ffmpeg_decode(bframe_avi, 120, 160)
    got = np.concatenate([c for _, c in iter_frame_chunks(bframe_avi, chunk_size=chunk, gray=False)])
    assert len(got) == len(ref) == ffprobe_count(bframe_avi)
    assert np.array_equal(got, ref)


def test_bframe_avi_ranges_and_single_frames(bframe_avi):
    ref = ffmpeg_decode(bframe_avi, 120, 160)
    n = len(ref)
    got = np.concatenate([c for _, c in iter_frame_chunks(bframe_avi, chunk_size=10, start=50, stop=n, gray=False)])
    assert np.array_equal(got, ref[50:])
    idx = [0, 17, n - 2, n - 1]
    assert np.array_equal(read_frames(bframe_avi, idx), ref[idx])
    assert np.array_equal(read_frame(bframe_avi, n - 1), ref[n - 1])


def test_gray_is_reference_formula(demo_video):
    path, _ = demo_video
    rgb = np.concatenate([c for _, c in iter_frame_chunks(path, gray=False, stop=20)])
    gray = np.concatenate([c for _, c in iter_frame_chunks(path, gray=True, stop=20)])
    # the reference: float32 mean over channels, then a cast (truncation) to uint8
    expected = rgb.astype(np.float32).mean(-1).astype(np.uint8)
    assert np.array_equal(gray, expected)
    odd = np.array([[[[1, 1, 0], [255, 255, 254]]]], np.uint8)
    assert to_gray(odd).tolist() == [[[0, 254]]]


def test_gray_exact_for_every_colour():
    # to_gray uses a rounded float affine map; it must equal the reference's float32 mean
    # + truncation for all 2**24 colours, on strided crops, and into a given output
    v = np.arange(256, dtype=np.uint8)
    r, g, b = np.meshgrid(v, v, v, indexing="ij")
    img = np.stack([r, g, b], -1).reshape(2, 2048, 4096, 3)
    expected = img.astype(np.float32).mean(-1).astype(np.uint8)
    assert np.array_equal(to_gray(img), expected)
    crop = img[:, 5:900:1, 7:3000]
    out = np.full(crop.shape[:3], 7, np.uint8)
    assert to_gray(crop, out=out) is out
    assert np.array_equal(out, expected[:, 5:900, 7:3000])
    strided_out = np.zeros((2, 895, 2993 * 2), np.uint8)[:, :, ::2]
    to_gray(crop, out=strided_out)
    assert np.array_equal(strided_out, expected[:, 5:900, 7:3000])


def test_chunk_range(demo_video):
    path, truth = demo_video
    chunks = list(iter_frame_chunks(path, chunk_size=50, start=30, stop=175))
    assert [s for s, _ in chunks] == [30, 80, 130]
    assert sum(len(c) for _, c in chunks) == 145
    assert chunks[0][1].shape[1:] == (truth["height"], truth["width"])


def test_early_close_stops_thread(demo_video):
    import threading

    path, _ = demo_video
    before = threading.active_count()
    it = iter_frame_chunks(path, chunk_size=8, prefetch=1)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_missing_empty_and_corrupt(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="junk.mp4"):
        probe_video(junk)


def test_truncated_video(tmp_path, demo_video):
    path, _ = demo_video
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        probe_video(cut)
        list(iter_frame_chunks(cut))


def test_session_checks(tmp_path, demo_video):
    from facerhythm_core.demo import write_demo_video

    path, _ = demo_video
    small = tmp_path / "small.mp4"
    write_demo_video(small, n_frames=10, height=120, width=160)
    with pytest.raises(VideoError, match="frame size"):
        probe_session([path, small])
    slow = tmp_path / "slow.mp4"
    write_demo_video(slow, n_frames=10, fps=60.0)
    with pytest.raises(VideoError, match="frame rates differ"):
        probe_session([path, slow])
    s = probe_session([path, slow], fps_override=90.0)
    assert s.frame_rate == 90.0 and s.num_frames_total == 250
    assert probe_session([path], fps_clamp=100.0).frame_rate == 100.0
    with pytest.raises(VideoError, match="at least one"):
        probe_session([])


def test_zero_frame_video(tmp_path):
    import cv2

    p = tmp_path / "zero.mp4"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 48))
    w.release()  # a container with no frame in it
    with pytest.raises(VideoError, match="zero.mp4"):
        probe_video(p)
