"""Streaming video input over torchcodec.

Frames are decoded in chunks by a background thread (so decoding overlaps with the
caller's work) and handed out as numpy ``uint8`` arrays; a whole video is never held
in memory. Grayscale is computed as the reference does: the equal-weight mean of the
colour channels, truncated to uint8.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .background import run_ahead
from .errors import VideoError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of one video file.

    ``num_frames`` is the number of frames that decode; ``fps`` the rate the video is
    analysed at (the container's average rate for a regular clock, the nominal rate
    of an irregular one that is resampled, the measured rate of user timestamps).
    ``timing`` is a :class:`facerhythm_core.timing_check.VideoTiming` as a dict, ``clock``
    what the session does with it (``"regular"``, ``"resample"`` or ``"ignore"``).
    """

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    channels: int
    codec: str
    pixel_format: str | None
    timing: dict | None = None
    clock: str = "regular"
    timestamps_file: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SessionVideos:
    """The videos of one session, checked for consistency.

    ``times`` holds each video's frame times in seconds on the session clock
    (:func:`facerhythm_core.timing.session_offsets`); ``warnings`` what a user should
    know (cut-short copies accepted, irregular clocks, unrecorded time between videos).
    """

    videos: tuple[VideoInfo, ...]
    frame_rate: float
    height: int
    width: int
    times: tuple = ()
    warnings: tuple = ()
    timing_policy: str = "resample"
    allow_truncated: bool = False

    @property
    def num_frames(self) -> list[int]:
        return [v.num_frames for v in self.videos]

    @property
    def num_frames_total(self) -> int:
        return int(sum(self.num_frames))

    def to_dict(self) -> dict:
        return {
            "videos": [v.to_dict() for v in self.videos],
            "frame_rate": self.frame_rate,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "num_frames_total": self.num_frames_total,
            "timing_policy": self.timing_policy,
            "allow_truncated": self.allow_truncated,
            "session_start": [float(t[0]) if len(t) else None for t in self.times],
            "session_end": [float(t[-1]) if len(t) else None for t in self.times],
            "warnings": list(self.warnings),
        }


def _check_file(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video not found: {path}. Check the `videos` column of the sessions table.")
    if p.is_dir():
        raise VideoError(f"video path is a folder, not a file: {path}")
    if p.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")


def _open_decoder(path: str, device: str = "cpu", threads: int = 0):
    try:
        from torchcodec.decoders import VideoDecoder
    except (ImportError, OSError, RuntimeError) as exc:  # missing FFmpeg shared libraries
        raise VideoError(
            f"cannot load torchcodec to read {path}: {exc}. torchcodec needs the FFmpeg "
            "shared libraries (Debian/Ubuntu: `apt-get install ffmpeg`; conda: "
            "`conda install -c conda-forge ffmpeg`)."
        ) from exc
    _check_file(path)
    try:
        return VideoDecoder(
            str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=int(threads), device=device
        )
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError on bad files
        raise VideoError(f"cannot decode video {path}: {exc}. Is it a complete, valid video file?") from exc


def probe_video(path: str | Path, engine: str = "auto") -> VideoInfo:
    """Read the metadata of one video and check that its first frame decodes.

    ``engine="auto"`` reads it with PyAV where that gives torchcodec's numbers
    (:mod:`facerhythm_core.video_probe`; no torchcodec import), else with torchcodec;
    ``"torchcodec"`` always asks torchcodec.

    Raises
    ------
    VideoError
        The file is missing, empty, unreadable, or has no frames.
    """
    from .video_probe import probe_metadata

    path = str(path)
    _check_file(path)
    try:
        md = probe_metadata(path) if engine == "auto" else None
    except Exception:  # noqa: BLE001 - torchcodec below names what is wrong with the file
        md = None
    return VideoInfo(path=path, **md) if md is not None else _probe_torchcodec(path)


def _probe_torchcodec(path: str) -> VideoInfo:
    dec = _open_decoder(path)
    md = dec.metadata
    n = len(dec)
    if n <= 0:
        raise VideoError(f"video has no frames: {path}")
    fps = md.average_fps
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"video reports no frame rate: {path}. Give the session an `fps` value.")
    try:
        frame0 = dec.get_frame_at(0).data
    except Exception as exc:
        raise VideoError(f"cannot decode the first frame of {path}: {exc}") from exc
    h, w, c = (int(s) for s in frame0.shape)
    return VideoInfo(
        path=path,
        num_frames=int(n),
        fps=float(fps),
        height=h,
        width=w,
        channels=c,
        codec=str(md.codec),
        pixel_format=getattr(md, "pixel_format", None),
    )


def probe_session(
    paths: Sequence[str | Path],
    fps_override: float | None = None,
    fps_clamp: float | None = None,
    max_fps_spread: float = 0.1,
    timestamp_files: Sequence[str | Path | None] | None = None,
    timing: str | None = None,
    allow_truncated: bool = False,
    contiguous: bool = False,
    log: logging.Logger | None = None,
) -> SessionVideos:
    """Probe every video of a session and check they belong together.

    Parameters
    ----------
    paths : sequence of paths
        The session's videos in recording order.
    fps_override : float, optional
        The session's own frame rate (wins over everything).
    fps_clamp : float, optional
        A run-wide frame rate used instead of the measured one.
    max_fps_spread : float
        Largest allowed (max - min) / mean of the videos' frame rates when no override
        is given.
    timestamp_files : sequence of path or None, optional
        One per video: the user's frame times replacing the container's.
    timing : {"resample", "strict", "ignore"}, optional
        ``video.timing``. None skips reading timestamps (metadata only, constant-rate
        clock assumed, as before timestamps existed).
    allow_truncated : bool
        ``video.allow_truncated``.
    contiguous : bool
        The session is tracked as one stream: unrecorded time between its videos is
        warned about.

    Returns
    -------
    SessionVideos
        With ``frame_rate`` = override, else clamp, else the median of the videos' rates.
    """
    from .timing import gaps_between_videos, session_offsets
    from .video_probe import probe_video_timing

    log = log or logger
    if len(paths) == 0:
        raise VideoError("a session needs at least one video")
    files = list(timestamp_files) if timestamp_files is not None else [None] * len(paths)
    if len(files) != len(paths):
        raise VideoError(
            f"{len(files)} timestamp files for {len(paths)} videos; give one per "
            "video, separated by ';' like the videos"
        )
    warns: list[str] = []
    if timing is None:
        infos = tuple(probe_video(p) for p in paths)
        times = tuple(np.arange(v.num_frames) / v.fps for v in infos)
    else:
        probed = [probe_video_timing(p, f, timing, allow_truncated, log) for p, f in zip(paths, files)]
        infos = tuple(i for i, _ in probed)
        from .timing_check import VideoTiming

        timings = [VideoTiming.from_dict(v.timing) for v in infos]
        offsets = session_offsets(timings, [t.source for t in timings])
        times = tuple(t + off for (_, t), off in zip(probed, offsets))
        for v, tm in zip(infos, timings):
            if tm.truncated:
                warns.append(
                    f"{v.path}: cut short, {tm.n_frames_decodable} of {tm.n_frames_header} "
                    "frames decode (video.allow_truncated)"
                )
            if v.clock != "regular":
                warns.append(f"{v.path}: irregular timing ({tm.describe()}); clock: {v.clock}")
        if contiguous:
            for i, gap in gaps_between_videos(times):
                msg = (
                    f"{paths[i - 1]} and {paths[i]} are {gap:.3f} s apart on the session clock "
                    "but the session is tracked contiguously (as if no time passed); set "
                    "`contiguous` to false for trials with gaps"
                )
                log.warning(msg)
                warns.append(msg)
    h, w = infos[0].height, infos[0].width
    for v in infos[1:]:
        if (v.height, v.width) != (h, w):
            raise VideoError(
                f"videos of one session must share a frame size: {infos[0].path} is {w}x{h} "
                f"but {v.path} is {v.width}x{v.height}. Split them into separate sessions."
            )
    rates = np.array([v.fps for v in infos])
    if fps_override is not None:
        frame_rate = float(fps_override)
    elif fps_clamp is not None:
        frame_rate = float(fps_clamp)
    else:
        spread = float((rates.max() - rates.min()) / rates.mean())
        if spread > max_fps_spread:
            listing = ", ".join(f"{v.path}: {v.fps:.4g} fps" for v in infos)
            raise VideoError(
                f"frame rates differ by {spread:.0%} within one session ({listing}). "
                "Give the session an `fps` value in the sessions table, or split it."
            )
        frame_rate = float(np.median(rates))
    return SessionVideos(
        videos=infos,
        frame_rate=frame_rate,
        height=h,
        width=w,
        times=times,
        warnings=tuple(warns),
        timing_policy=timing or "ignore",
        allow_truncated=bool(allow_truncated),
    )


# floor((R + G + B) / 3) as one affine map rounded to nearest: (R + G + B - 1) / 3 lies at
# least 1/6 away from a rounding boundary, so float32 error cannot change the result
# (checked over all 2**24 colours in the tests)
_GRAY_MAP = np.array([[1 / 3, 1 / 3, 1 / 3, -1 / 3]])


def to_gray(frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Equal-weight channel mean, truncated to uint8 (as the reference).

    Parameters
    ----------
    frames : ndarray, uint8, shape (..., H, W, C)
        May be a strided view (e.g. a crop of whole frames).
    out : ndarray, uint8, shape (..., H, W), optional
        Where to write the result.

    Returns
    -------
    ndarray, uint8, shape (..., H, W)
    """
    frames = np.asarray(frames)
    c = frames.shape[-1]
    if out is None:
        out = np.empty(frames.shape[:-1], dtype=np.uint8)
    if c == 1:
        out[...] = frames[..., 0]
        return out
    if c == 3 and frames.dtype == np.uint8 and frames.ndim >= 3:
        import cv2

        # one pass per frame in OpenCV instead of five numpy passes (about 1.5x faster)
        dst = out if out.flags.c_contiguous else np.empty(out.shape, dtype=np.uint8)
        flat_in = frames.reshape((-1,) + frames.shape[-3:])
        flat_out = dst.reshape((-1,) + dst.shape[-2:])  # a view: dst is contiguous
        for i in range(len(flat_in)):
            cv2.transform(flat_in[i], _GRAY_MAP, dst=flat_out[i])
        if dst is not out:
            out[...] = dst
        return out
    # integer floor division equals the reference's float mean + truncation
    acc = frames[..., 0].astype(np.uint16)
    for i in range(1, c):
        acc += frames[..., i]
    acc //= c
    out[...] = acc
    return out


def _tail_frames_cv2(path: str, first: int, stop: int, check: np.ndarray | None) -> np.ndarray:
    """Frames [first, stop) through OpenCV, for the last frames torchcodec cannot deliver.

    torchcodec 0.13 fails on the last ``has_b_frames`` frames of some H.264 files (AVI
    with B-frames; upstream issue #905), and on such files its seeks land a few frames
    early. OpenCV's FFmpeg reader counts frames in decode order; its frame ``first - 1``
    is checked against ``check`` (torchcodec's) before the result is trusted.
    """
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        begin = first - 1 if check is not None else first
        cap.set(cv2.CAP_PROP_POS_FRAMES, begin)
        got = []
        for _ in range(begin, stop):
            ok, bgr = cap.read()
            if not ok:
                break
            got.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if check is not None and got:
            # different YUV->RGB rounding is fine; a different frame is not
            if np.abs(got[0].astype(np.int16) - check.astype(np.int16)).mean() > 3.0:
                got = []
            else:
                got = got[1:]
        if len(got) != stop - first:
            raise VideoError(
                f"the last {stop - first} frames of {path} cannot be decoded reliably "
                "(a known torchcodec problem with H.264 B-frames in AVI files). Remux the "
                "file to MP4 without re-encoding: ffmpeg -i in.avi -c copy out.mp4"
            )
        return np.stack(got)
    finally:
        cap.release()


def _tail_frames_av(path: str, first: int, stop: int) -> np.ndarray:
    """Frames [first, stop) through PyAV, identified by their presentation timestamps
    (exact where counting frames is not: cut-short copies end in partial packets)."""
    import av

    from .timing import read_container_timestamps

    times = read_container_timestamps(path).times
    if len(times) < stop:
        raise VideoError(f"{path}: frames {len(times)}-{stop} do not decode; the file may be truncated or corrupt")
    with av.open(path) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        wanted = {int(round(t / tb)): i for i, t in enumerate(times[first:stop])}
        got: dict[int, np.ndarray] = {}
        container.seek(int(round(times[max(0, first - 1)] / tb)), stream=stream, backward=True)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for fr in frames:
                i = wanted.get(fr.pts)
                if i is not None:
                    got[i] = fr.to_ndarray(format="rgb24")
            if len(got) == len(wanted):
                break
    if len(got) != stop - first:
        raise VideoError(
            f"the last {stop - first} frames of {path} cannot be decoded; the file may be truncated or corrupt"
        )
    return np.stack([got[i] for i in range(stop - first)])


_TAIL = 4  # frames at the end decoded separately (more than any has_b_frames seen)


def _decode_sequential(
    dec, path: str, start: int, stop: int, n: int, last: np.ndarray | None, state: dict
) -> np.ndarray:
    """Decode [start, stop), continuing sequentially on ``dec`` (never seeking).

    ``last`` is frame ``start - 1`` (or None), used to verify the OpenCV fallback.
    ``state`` carries the OpenCV-decoded tail once torchcodec has failed at the end
    (after such a failure the decoder may return wrong frames, so it is not asked again).
    """
    if state.get("tail") is not None:
        t0, tail = state["tail"]
        if start >= t0:
            return tail[start - t0 : stop - t0]
    parts = []
    split = n - _TAIL
    if start < split < stop:  # keep the fragile end in its own call
        parts.append(dec.get_frames_in_range(start, split).data.cpu().numpy())
        last, start = parts[-1][-1], split
    try:
        parts.append(dec.get_frames_in_range(start, stop).data.cpu().numpy())
    except RuntimeError as exc:
        if start < split:
            raise VideoError(
                f"cannot decode frames {start}-{stop} of {path}: {exc}. The file may be truncated or corrupt."
            ) from exc
        logger.info(
            "torchcodec stops early at the end of %s (%s); reading frames %d-%d with OpenCV", path, exc, start, stop
        )
        try:
            tail = _tail_frames_cv2(path, start, n, last)
        except VideoError:  # e.g. the partial last packets of a cut-short copy
            tail = _tail_frames_av(path, start, n)
        state["tail"] = (start, tail)
        parts.append(tail[: stop - start])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def iter_frame_chunks(
    path: str | Path,
    chunk_size: int = 128,
    gray: bool = True,
    start: int = 0,
    stop: int | None = None,
    device: str = "cpu",
    prefetch: int = 2,
    decode_threads: int = 0,
    n_frames: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a video in chunks, decoded ahead by a background thread.

    Parameters
    ----------
    path : path
        Video file.
    chunk_size : int
        Frames per chunk.
    gray : bool
        Yield (n, H, W) grayscale (reference weighting) instead of (n, H, W, 3) RGB.
    start, stop : int
        Frame range [start, stop); ``stop=None`` means the end of the video.
    device : {"cpu", "cuda"}
        torchcodec decode device; frames always come back as CPU numpy arrays.
    prefetch : int
        Chunks decoded ahead (memory is about (prefetch + 2) chunks).
    decode_threads : int
        FFmpeg decoding threads; 0 lets FFmpeg choose. One thread costs the least CPU
        per frame (no frame-threading overhead), the better choice when the decoder
        runs beside heavier work, as in the tracker.
    n_frames : int, optional
        The video's decodable frame count when known to be below the decoder's own
        (a cut-short copy, see :mod:`facerhythm_core.timing`): frames past it are
        never asked for.

    Yields
    ------
    (first_index, frames)
        ``first_index`` is the video frame index of ``frames[0]``.
    """
    path = str(path)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    dec = [_open_decoder(path, device, threads=decode_threads)]
    n = len(dec[0]) if n_frames is None else min(len(dec[0]), int(n_frames))
    stop = n if stop is None else min(int(stop), n)
    start = int(start)
    if not 0 <= start <= stop:
        raise ValueError(f"frame range [{start}, {stop}) is outside video {path} ({n} frames)")

    def chunks():
        # Always decode from frame 0 and never seek: on some H.264 files torchcodec's
        # seeks land a few frames early. Frames before `start` are decoded and dropped.
        last = None
        state: dict = {}
        for s in range(0, start, chunk_size):
            last = _decode_sequential(dec[0], path, s, min(s + chunk_size, start), n, last, state)[-1]
        for s in range(start, stop, chunk_size):
            e = min(s + chunk_size, stop)
            frames = _decode_sequential(dec[0], path, s, e, n, last, state)
            if len(frames) != e - s:
                raise VideoError(f"{path}: expected {e - s} frames at {s}, decoded {len(frames)}")
            last = frames[-1]
            yield s, (to_gray(frames) if gray else frames)

    # `yield from` keeps this a generator, so closing it early stops the decode thread
    yield from run_ahead(chunks(), maxsize=prefetch, name=f"decode:{Path(path).name}")


def read_frames(path: str | Path, indices: Sequence[int], gray: bool = False, chunk_size: int = 128) -> np.ndarray:
    """Decode selected frames: (k, H, W, 3) RGB or (k, H, W) gray uint8.

    Streams the video up to the largest index (no seeking, see
    :func:`iter_frame_chunks`), keeping only the frames asked for.
    """
    idx = [int(i) for i in indices]
    info_n = len(_open_decoder(str(path)))
    bad = [i for i in idx if not 0 <= i < info_n]
    if bad:
        raise VideoError(f"frames {bad} requested but {path} has {info_n} frames")
    if not idx:
        raise ValueError("no frame indices given")
    wanted = {}
    for s, chunk in iter_frame_chunks(path, chunk_size=chunk_size, gray=gray, stop=max(idx) + 1):
        for i in idx:
            if s <= i < s + len(chunk):
                wanted[i] = chunk[i - s].copy()
    return np.stack([wanted[i] for i in idx])


def read_frame(path: str | Path, index: int = 0, gray: bool = False) -> np.ndarray:
    """Decode one frame: (H, W, 3) RGB or (H, W) gray uint8."""
    return read_frames(path, [index], gray=gray)[0]
