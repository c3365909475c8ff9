"""Frame timestamps: reading them, the session clock, and a uniform resampling.

A video is a clock only if its frames were taken at a constant rate. This module reads
each frame's presentation timestamp from the container's packets (a demux pass, no
decoding; see :func:`read_container_timestamps`), or from a user's timestamp file
(:func:`load_timestamp_file`, e.g. camera TTL pulses on the acquisition clock).
:mod:`facerhythm_core.timing_check` judges them (regularity, gaps, cut-short copies,
the integrity policy).

:func:`session_offsets` puts a session's videos on one clock, :class:`UniformGrid`
puts an irregular trajectory on a uniform grid at the nominal rate by linear
interpolation, marking the grid samples that fall inside long gaps, and
``timestamps.h5`` is written and read here. ``docs/timing.md`` explains the choices.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, VideoError
from .timing_check import GAP_FACTOR, VideoTiming

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ContainerTimestamps:
    """What a demux pass over a video's packets tells.

    Attributes
    ----------
    times : ndarray, float64, (n,)
        Presentation timestamps in seconds, in presentation order, of the frames that
        decode (``n`` = decodable frames). Relative to the stream's start as stored.
    n_frames_header : int or None
        Frame count promised by the container header (None when it has none).
    duration_header : float or None
        Stream duration from the header, seconds.
    header_rate : float or None
        The stream's guessed frame rate (r_frame_rate), Hz.
    source : str
        ``"packets"`` or ``"none"`` (no timestamps in the container: ``times`` assumes
        the header rate).
    """

    times: np.ndarray
    n_frames_header: int | None
    duration_header: float | None
    header_rate: float | None
    source: str


def read_container_timestamps(path: str | Path, fallback_rate: float | None = None) -> ContainerTimestamps:
    """Per-frame presentation timestamps of a video's first video stream, from packets.

    One demux pass (packets are read, not decoded), memory linear in the frame count
    only (8 bytes a frame). Packets that run past the end of a cut-short file are
    checked by decoding the last group of pictures, so ``len(times)`` is the number of
    frames that really decode.

    Parameters
    ----------
    path : path
        Video file.
    fallback_rate : float, optional
        Rate used to synthesise times when the container stores none.

    Raises
    ------
    VideoError
        The file cannot be opened or has no video stream.
    """
    import av

    path = str(path)
    try:
        container = av.open(path)
    except Exception as exc:  # PyAV raises many types for bad files
        raise VideoError(f"cannot read timestamps of {path}: {exc}. Is it a complete, valid video file?") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else None
        header_n = int(stream.frames) if stream.frames else None
        duration = (
            float(stream.duration * stream.time_base)
            if stream.duration and stream.time_base
            else (container.duration / 1e6 if container.duration else None)
        )
        rate = stream.guessed_rate or stream.average_rate
        header_rate = float(rate) if rate else None
        pts = array("q")
        keyframes = array("q")  # decode-order packet index of each keyframe
        n_packets = 0
        missing = 0
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's flush packet, discarded packets
            if packet.is_keyframe:
                keyframes.append(n_packets)
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                missing += 1
            else:
                pts.append(int(t))
            n_packets += 1
    if n_packets == 0:
        raise VideoError(f"video has no frames: {path}")
    if missing or tb is None:
        rate = header_rate or fallback_rate
        if not rate:
            raise VideoError(
                f"{path} stores no frame timestamps and no frame rate; give the "
                "session an `fps` value or a `timestamps` file"
            )
        return ContainerTimestamps(np.arange(n_packets) / rate, header_n, duration, header_rate, "none")
    times = np.sort(np.frombuffer(pts, dtype=np.int64)).astype(np.float64) * tb
    if header_n is not None and header_n > n_packets:
        times = _decodable_prefix(path, times, tb)
    return ContainerTimestamps(times, header_n, duration, header_rate, "packets")


def _decodable_prefix(path: str, times: np.ndarray, tb: float) -> np.ndarray:
    """Of a cut-short file's frames, those that decode: the longest prefix in
    presentation order (the last packets are often partial).

    Decodes from a keyframe about two groups of pictures before the end (cheap) and
    keeps the frames up to the first one that fails.
    """
    import av

    decoded = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        seek_to = times[max(0, len(times) - 1 - 300)]  # a few hundred frames before the end
        container.seek(int(seek_to / tb), stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    if frame.pts is not None:
                        decoded.append(frame.pts * tb)
            except av.error.FFmpegError:
                continue
    if not decoded:
        return times
    first = min(decoded)
    ok = set(np.round(np.asarray(decoded) / tb).astype(np.int64).tolist())
    keep = len(times)
    for i in range(int(np.searchsorted(times, first - 0.5 * tb)), len(times)):
        if int(round(times[i] / tb)) not in ok:
            keep = i
            break
    return times[:keep]


def load_timestamp_file(path: str | Path) -> np.ndarray:
    """Read a user's per-frame timestamps (seconds): ``.npy`` or a text/CSV column.

    Text files take one number per line, or the first numeric column of a CSV/TSV;
    a first line that is not a number is a header, ``#`` starts a comment.

    Returns
    -------
    ndarray, float64, (n,)
        Finite and strictly increasing.

    Raises
    ------
    ConfigError
        Naming the file, and the line or index of the first bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"timestamps file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            t = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ConfigError(f"timestamps {path}: cannot read as a .npy array ({exc})") from exc
        if t.ndim != 1 or not np.issubdtype(t.dtype, np.number):
            raise ConfigError(
                f"timestamps {path}: need a 1-D numeric array of seconds, got shape {t.shape} dtype {t.dtype}"
            )
        t = t.astype(np.float64)
        where = [f"index {i}" for i in range(len(t))]
    else:
        t, where = _read_text_column(path)
    if len(t) == 0:
        raise ConfigError(f"timestamps {path}: no values")
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ConfigError(
            f"timestamps {path}, {where[bad[0]]}: {t[bad[0]]} is not a finite "
            "number; every time must be a finite number of seconds"
        )
    d = np.diff(t)
    back = np.flatnonzero(d <= 0)
    if back.size:
        i = back[0]
        raise ConfigError(
            f"timestamps {path}, {where[i + 1]}: not strictly increasing "
            f"({t[i + 1]!r} s after {t[i]!r} s); give one time per frame in order"
        )
    return t


def _read_text_column(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"timestamps {path}: not UTF-8 text ({exc}); save it as UTF-8 or .npy") from None
    values, where = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cell = line.replace(";", ",").replace("\t", ",").split(",")[0].strip()
        try:
            v = float(cell)
        except ValueError:
            if not values and not where:  # a header line
                continue
            raise ConfigError(f"timestamps {path}, line {lineno}: {cell!r} is not a number") from None
        values.append(v)
        where.append(f"line {lineno}")
    return np.asarray(values, dtype=np.float64), where


# --------------------------------------------------------------------------- session clock


def session_offsets(timings: Sequence[VideoTiming], sources: Sequence[str]) -> list[float]:
    """Seconds to add to each video's own times to put it on the session clock.

    User timestamp files are on the acquisition clock already (offset 0), so the real
    gaps between trials are kept. Container timestamps restart in every file and say
    nothing of the time between files: such a video is placed one median interval
    after the end of the previous one (back to back), starting the session at 0.
    """
    offsets, end = [], None
    for tm, src in zip(timings, sources):
        if src == "file":
            off = 0.0
        else:
            off = -tm.start if end is None else end + tm.median_interval - tm.start
        offsets.append(off)
        end = tm.end + off
    return offsets


def gaps_between_videos(times: Sequence[np.ndarray], gap_factor: float = GAP_FACTOR) -> list[tuple[int, float]]:
    """(index of the later video, seconds of unrecorded time) for each pair of
    consecutive videos (session clock) separated by more than ``gap_factor`` intervals."""
    out = []
    for i in range(1, len(times)):
        a, b = np.asarray(times[i - 1]), np.asarray(times[i])
        if len(a) < 2 or len(b) < 1:
            continue
        med = float(np.median(np.diff(a)))
        between = float(b[0] - a[-1])
        if between > gap_factor * med:
            out.append((i, between - med))
    return out


# --------------------------------------------------------------------------- resampling


class UniformGrid:
    """Linear interpolation of samples taken at ``times`` onto a uniform grid.

    The grid starts at the first frame and steps by ``1 / rate`` up to the last frame.
    Each grid sample is a weighted mean of the two frames around it; a sample whose
    two frames are more than ``GAP_FACTOR`` grid steps apart, and which is more than
    half a step from both, lies inside a gap (frames were dropped there) and is marked
    in :attr:`in_gap`: the interpolation bridges the gap with a straight line, which
    carries no rhythm.

    Parameters
    ----------
    times : ndarray, float64, (n,)
        Strictly increasing frame times, seconds.
    rate : float
        Grid rate, Hz.
    """

    def __init__(self, times: np.ndarray, rate: float):
        t = np.asarray(times, dtype=np.float64)
        if t.ndim != 1 or len(t) < 2:
            raise ValueError("need at least two frame times to resample")
        if not np.all(np.diff(t) > 0):
            raise ValueError("frame times must be strictly increasing")
        self.rate = float(rate)
        self.start = float(t[0])
        n = int(np.floor((t[-1] - t[0]) * self.rate + 1e-9)) + 1
        self.times = self.start + np.arange(n, dtype=np.float64) / self.rate
        i = np.clip(np.searchsorted(t, self.times, side="right") - 1, 0, len(t) - 2)
        span = t[i + 1] - t[i]
        self._left = i
        self._weight = np.clip((self.times - t[i]) / span, 0.0, 1.0).astype(np.float32)
        # inside a gap: between two frames too far apart, and not on (within half a
        # step of) either of them
        near = np.minimum(self.times - t[i], t[i + 1] - self.times)
        self.in_gap = (span > GAP_FACTOR / self.rate) & (near > 0.5 / self.rate)
        self.n_source = len(t)

    def __len__(self) -> int:
        return len(self.times)

    def apply(self, values: np.ndarray, axis: int = 0) -> np.ndarray:
        """Interpolate ``values`` (frame axis ``axis`` of length n) onto the grid.

        Returns float32 with the frame axis replaced by the grid's length.
        """
        v = np.asarray(values)
        if v.shape[axis] != self.n_source:
            raise ValueError(
                f"values have {v.shape[axis]} samples along axis {axis}, the grid was built for {self.n_source}"
            )
        a = np.take(v, self._left, axis=axis).astype(np.float32)
        b = np.take(v, self._left + 1, axis=axis).astype(np.float32)
        shape = [1] * v.ndim
        shape[axis] = len(self)
        w = self._weight.reshape(shape)
        return a + (b - a) * w


# --------------------------------------------------------------------------- file


def write_timestamps_h5(
    path: str | Path,
    times: Sequence[np.ndarray],
    video_paths: Sequence[str],
    clocks: Sequence[str],
    sources: Sequence[str],
) -> None:
    """Write ``timestamps.h5``: ``timestamps/{i}`` float64 (n_i,) seconds on the
    session clock, with attributes ``path``, ``clock`` and ``source`` per video."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["units"] = "s"
        for i, (t, p, c, s) in enumerate(zip(times, video_paths, clocks, sources)):
            ds = f.create_dataset(f"timestamps/{i}", data=np.asarray(t, np.float64))
            ds.attrs["path"] = str(p)
            ds.attrs["clock"] = str(c)
            ds.attrs["source"] = str(s)


def read_timestamps_h5(path: str | Path) -> list[dict]:
    """Read ``timestamps.h5``: one ``{"times", "path", "clock", "source"}`` per video."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["timestamps"]
        return [
            {"times": g[k][()], **{a: str(g[k].attrs[a]) for a in ("path", "clock", "source")}}
            for k in sorted(g, key=int)
        ]


def stream_clocks(videos: Sequence[dict], contiguous: bool, policy: str) -> dict[str, dict]:
    """Per tracked stream (key ``"0"``, ``"1"``, ... or one ``"0"`` when contiguous):
    its frame times and whether its tracks are resampled before the spectral stage.

    A contiguous stream is resampled when one of its videos is, or when unrecorded
    time separates two of its videos under ``policy == "resample"``.
    """
    if not contiguous:
        return {str(i): {"times": v["times"], "clock": v["clock"]} for i, v in enumerate(videos)}
    times = [v["times"] for v in videos]
    clock = "regular"
    if any(v["clock"] == "resample" for v in videos) or (policy == "resample" and gaps_between_videos(times)):
        clock = "resample"
    elif any(v["clock"] == "ignore" for v in videos):
        clock = "ignore"
    return {"0": {"times": np.concatenate(times), "clock": clock}}


def bin_gap_fraction(in_gap: np.ndarray, x_axis: np.ndarray, win_size: int) -> np.ndarray:
    """Fraction of each time bin's window (``win_size`` samples centred on ``x_axis``)
    that lies inside a gap, float32 (T',)."""
    g = np.concatenate([[0], np.cumsum(np.asarray(in_gap, dtype=np.int64))])
    n = len(in_gap)
    lo = np.clip(np.round(np.asarray(x_axis) - win_size / 2).astype(np.int64), 0, n)
    hi = np.clip(np.round(np.asarray(x_axis) + win_size / 2).astype(np.int64), 0, n)
    width = np.maximum(hi - lo, 1)
    return ((g[hi] - g[lo]) / width).astype(np.float32)
