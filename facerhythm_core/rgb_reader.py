"""The tracker's RGB reader: frames decoded in order with PyAV, the same pixels as
:func:`facerhythm_core.video.iter_frame_chunks` with less CPU inside the tracker.

The tracker reads every frame once, in order, so it needs no seeking and no frame
index. Alone on a quiet machine both readers decode a 784 x 582 H.264 frame in about
1.7 ms; inside the tracker, beside its two busy threads, torchcodec's reader costs far
more: the tracker used 1.45x the CPU and 1.35x the wall time with it (``BENCHMARKS.md``,
"Tracking at face size"). Both convert with FFmpeg's swscale and give
identical RGB for the 8-bit YUV and gray formats tested; others (10-bit gave different RGB)
keep the torchcodec reader.

Frame ``i`` of torchcodec's exact mode is the frame with the ``i``-th smallest
presentation timestamp. Every decoded frame is checked against that order (the
packets' timestamps, :func:`facerhythm_core.timing.read_container_timestamps`); at
the first frame that does not match, or that fails to decode, the rest of the range
comes from :func:`~facerhythm_core.video.iter_frame_chunks`, so a file PyAV reads
differently still gives the torchcodec reader's frames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from .video import iter_frame_chunks, run_ahead

logger = logging.getLogger(__name__)

__all__ = ["PYAV_FORMATS", "iter_rgb_chunks"]

# decoder output formats whose rgb24 conversion is identical in PyAV and torchcodec
PYAV_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"})


def _expected_pts(path: str) -> np.ndarray | None:
    """Presentation timestamps (stream time base, int64, (n,)) in frame-index order, or
    None when the container stores none."""
    import av

    from .timing import read_container_timestamps

    try:
        ts = read_container_timestamps(path)
        with av.open(path) as container:
            tb = float(container.streams.video[0].time_base)
    except Exception:  # noqa: BLE001 - the torchcodec reader reports what is wrong with the file
        return None
    if ts.source != "packets" or not tb:
        return None
    return np.round(ts.times / tb).astype(np.int64)


def _av_chunks(path: str, start: int, stop: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Verified frames in chunks starting at ``start + j * chunk_size``, as the torchcodec
    reader cuts them (the tracker's rewind buffer keeps whole chunks, so the cuts must
    not move). Stops after the last whole chunk before the first frame that is not
    frame k in torchcodec's order, fails to decode, or has a format outside
    :data:`PYAV_FORMATS`; the last chunk may be short only when it ends at ``stop``."""
    import av

    pts = _expected_pts(path)
    if pts is None:
        return
    buf = None
    i = 0  # index of the next decoded frame
    fill = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # the cheapest CPU per frame beside the tracker's other lanes
        try:
            for frame in container.decode(stream):
                if i >= min(stop, len(pts)) or frame.pts != pts[i] or frame.format.name not in PYAV_FORMATS:
                    return
                if frame.rotation:  # torchcodec applies a display rotation; PyAV does not
                    return
                if i >= start:
                    if buf is None:
                        buf = np.empty((chunk_size, frame.height, frame.width, 3), np.uint8)
                    buf[fill] = frame.to_ndarray(format="rgb24")
                    fill += 1
                    if fill == chunk_size or i + 1 == stop:
                        yield i + 1 - fill, buf[:fill].copy()
                        fill = 0
                i += 1
        except av.error.FFmpegError as exc:
            logger.info("PyAV stops at frame %d of %s (%s)", i, path, exc)


def iter_rgb_chunks(
    path: str | Path,
    chunk_size: int = 32,
    start: int = 0,
    n_frames: int | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream frames [start, n_frames) as RGB chunks, decoded ahead by a background thread.

    Parameters
    ----------
    path : path
        Video file.
    chunk_size : int
        Frames per chunk.
    start : int
        First frame.
    n_frames : int, optional
        The video's decodable frame count (as the probe found it); None = all frames.
    prefetch : int
        Chunks decoded ahead.

    Yields
    ------
    (first_index, frames)
        ``frames`` is uint8, shape (n, H, W, 3), equal to what
        ``iter_frame_chunks(path, chunk_size, gray=False, ...)`` gives for those frames.
    """
    path = str(path)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    stop = int(n_frames) if n_frames is not None else None

    def chunks():
        nxt = int(start)
        limit = stop if stop is not None else np.iinfo(np.int64).max
        for s, fr in _av_chunks(path, nxt, limit, chunk_size):
            yield s, fr
            nxt = s + len(fr)
        if stop is None or nxt < stop:
            if nxt > start:
                logger.info("%s: frames from %d read with torchcodec", Path(path).name, nxt)
            yield from iter_frame_chunks(
                path, chunk_size, gray=False, start=nxt, stop=stop, prefetch=1, decode_threads=1, n_frames=n_frames
            )

    yield from run_ahead(chunks(), maxsize=prefetch, name=f"decode:{Path(path).name}")
