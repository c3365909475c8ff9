"""A video's metadata read with PyAV: torchcodec's numbers without loading torchcodec.

:func:`facerhythm_core.video.probe_video` reports what torchcodec's exact mode sees
(frame count, average rate, frame size, codec, pixel format). Loading torchcodec
imports ``torch._dynamo``: 2-3 s and ~110 MB in every probe job, most of the probe's
time on a short session. This module computes the same numbers from one demux pass
and one decoded frame:

- frame count: the stream's packets, less discarded ones (torchcodec's scan), on a
  regular clock (every packet as long as the step between sorted times);
- average rate: count / (max(pts + duration) - min(pts)) with each end in seconds as
  ``pts * num / den`` (torchcodec's ``average_fps`` after its scan, equal to the last
  bit on every file in ``tests/test_video_probe.py``);
- frame size of the first decoded frame; torchcodec's RGB output has 3 channels.

Where the file is one torchcodec may read differently (a container other than
MP4/MOV/Matroska, whose frame times the demuxer infers; an irregular clock, whose
last packets' durations differ between FFmpeg versions; a display rotation, which
torchcodec applies; more than one video stream; packets without timestamps; fewer
than two frames), :func:`probe_metadata` returns None and the caller asks torchcodec.

:func:`probe_video_timing` adds the video's clock (frame times, integrity policy).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # video imports this module lazily; no cycle at run time
    from .video import VideoInfo

__all__ = ["probe_metadata", "probe_video_timing"]

logger = logging.getLogger("facerhythm_core.video")


# containers that store each frame's presentation time; in others (AVI, raw streams)
# the demuxer infers it, and PyAV's bundled FFmpeg may infer it differently from the
# system FFmpeg torchcodec loads (an AVI of H.264 with B-frames: times shifted by one
# frame, the average rate one bit apart)
_STORED_PTS = frozenset({"mov", "mp4", "matroska", "webm"})


def _regular_scan(container, stream) -> tuple[int, int, int] | None:
    """(packets, first pts, one past the last frame's end) of a stream whose packets
    all last the same time and whose sorted times step by exactly that; None otherwise.

    Only such a clock is read the same by every FFmpeg: on an irregular one the
    durations FFmpeg gives the last packets changed between versions (a 2 s irregular
    MP4: 50.5 frames/s from the system FFmpeg, 51.0 from PyAV's)."""
    import numpy as np

    times, durations = [], set()
    for packet in container.demux(stream):
        if packet.pts is None and packet.dts is None and packet.size == 0:
            continue  # PyAV's flush packet at the end of the file
        if packet.is_discard:
            continue
        t = packet.pts if packet.pts is not None else packet.dts
        if t is None:
            return None
        times.append(t)
        durations.add(packet.duration)
        if len(durations) > 1:
            return None
    step = durations.pop() if durations else 0
    if len(times) < 2 or step <= 0:
        return None
    t = np.sort(np.asarray(times, dtype=np.int64))
    if not np.all(np.diff(t) == step):
        return None
    return len(t), int(t[0]), int(t[-1]) + step


def _first_frame(container, stream):
    container.seek(0, stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        return frame
    return None


def probe_metadata(path: str) -> dict | None:
    """torchcodec's metadata of ``path``'s video stream, or None where PyAV cannot be
    trusted to match it (see the module docstring).

    Returns
    -------
    dict or None
        ``num_frames``, ``fps`` (frames/s), ``height``, ``width``, ``channels`` (3),
        ``codec``, ``pixel_format``.

    Raises
    ------
    Exception
        Whatever PyAV raises on a file it cannot open or decode; the caller turns it
        into a :class:`~facerhythm_core.errors.VideoError` naming the file.
    """
    import av

    with av.open(str(path)) as container:
        if len(container.streams.video) != 1 or not _STORED_PTS.intersection(container.format.name.split(",")):
            return None
        stream = container.streams.video[0]
        tb = stream.time_base
        scan = _regular_scan(container, stream) if tb else None
        if scan is None:
            return None
        n, lo, hi = scan
        frame = _first_frame(container, stream)
        if frame is None or getattr(frame, "rotation", 0):
            return None
        ctx = stream.codec_context
        num, den = tb.numerator, tb.denominator
        return {
            "num_frames": n,
            "fps": n / ((hi * num) / den - (lo * num) / den),
            "height": int(frame.height),
            "width": int(frame.width),
            "channels": 3,
            "codec": str(ctx.codec.canonical_name),  # avcodec_get_name, as torchcodec
            "pixel_format": ctx.format.name if ctx.format is not None else None,
        }


def probe_video_timing(
    path: str | Path,
    timestamps_file: str | Path | None = None,
    policy: str = "resample",
    allow_truncated: bool = False,
    log: logging.Logger | None = None,
) -> tuple[VideoInfo, np.ndarray]:
    """:func:`probe_video` plus the video's clock: frame times and the integrity policy.

    Parameters
    ----------
    path : path
    timestamps_file : path, optional
        The user's per-frame times (seconds), replacing the container's; must hold
        exactly one time per decodable frame.
    policy : {"resample", "strict", "ignore"}
        ``video.timing``; see :func:`facerhythm_core.timing_check.check_timing`.
    allow_truncated : bool
        ``video.allow_truncated``: accept a cut-short copy with a warning.

    Returns
    -------
    (VideoInfo, times)
        ``times`` float64 (num_frames,), seconds on the video's own clock.

    Raises
    ------
    VideoError, ConfigError
        Cut short, irregular under ``strict``, or a timestamps file of the wrong
        length; messages name the file and both numbers.
    """
    from .errors import ConfigError
    from .video import VideoInfo, probe_video
    from .timing import load_timestamp_file, read_container_timestamps
    from .timing_check import analyze_timestamps, check_timing

    log = log or logger
    info = probe_video(path)
    ct = read_container_timestamps(info.path, fallback_rate=info.fps)
    n_dec = min(info.num_frames, len(ct.times))
    times = ct.times
    if ct.source == "none":
        log.warning("%s stores no frame timestamps; assuming a constant %.6g Hz clock", info.path, info.fps)
    if len(ct.times) > info.num_frames:
        # the packets and the decoder's own index disagree: trust the decoder's count
        log.warning(
            "%s: %d packets with timestamps but %d frames in the decoder's index; assuming a constant %.6g Hz clock",
            info.path,
            len(ct.times),
            info.num_frames,
            info.fps,
        )
        times, n_dec = np.arange(info.num_frames) / info.fps, info.num_frames
    source = ct.source
    if timestamps_file is not None:
        user = load_timestamp_file(timestamps_file)
        if len(user) != n_dec:
            raise ConfigError(
                f"timestamps {timestamps_file} has {len(user)} times but video {info.path} has "
                f"{n_dec} decodable frames; give exactly one time (s) per frame"
            )
        times, source = user, "file"
    tm = analyze_timestamps(times[:n_dec], source, ct.n_frames_header, ct.duration_header, ct.header_rate)
    clock = check_timing(tm, info.path, policy, allow_truncated, log)
    if clock == "resample":
        fps = tm.nominal_rate
    elif source == "file" and n_dec > 1:
        fps = (n_dec - 1) / float(times[n_dec - 1] - times[0])  # the measured mean rate
    else:
        fps = info.fps
    info = VideoInfo(
        **{
            **asdict(info),
            "num_frames": int(n_dec),
            "fps": float(fps),
            "timing": tm.to_dict(),
            "clock": clock,
            "timestamps_file": None if timestamps_file is None else str(timestamps_file),
        }
    )
    return info, np.asarray(times[:n_dec], dtype=np.float64)
