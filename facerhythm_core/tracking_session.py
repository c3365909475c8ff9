"""Tracking a session: its videos as one stream or one per video, frames to freeze, and
the ``tracking.h5`` layout (docs/file_formats.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import ConfigError, VideoError
from .freeze import load_frames_freeze  # noqa: F401 (part of this module's API)
from .mesh import build_mesh, mesh_offsets
from .tracking import track_stream
from .tracking_params import TrackingParams


@dataclass
class SessionTracking:
    """Output of :func:`track_session`.

    Attributes
    ----------
    results : dict[str, TrackingResult]
        One per key: "0", "1", ... per video, or a single "0" when contiguous.
    point_positions : ndarray, float32, (N, 2)
    neighbors : ndarray, int64, (N, k)
    mesh_d0 : ndarray, float32, (N, 2)
    mask : ndarray, bool, (H, W)
    contiguous : bool
    video_paths : list of str
    num_frames : list of int
        Frames per video.
    """

    results: dict
    point_positions: np.ndarray
    neighbors: np.ndarray
    mesh_d0: np.ndarray
    mask: np.ndarray
    contiguous: bool
    video_paths: list
    num_frames: list
    params: TrackingParams = field(default_factory=TrackingParams)

    @property
    def violation_fraction(self) -> np.ndarray:
        return np.array([self.results[k].violation_fraction for k in sorted(self.results, key=int)], dtype=np.float64)


def _resolve_starts(idx_start, num_frames: Sequence[int], contiguous: bool) -> list[int]:
    """Start frame per stream (one stream when contiguous)."""
    if contiguous:
        if np.ndim(idx_start) != 0:
            raise ConfigError(
                "tracking.idx_start must be a single integer when tracking is "
                f"contiguous (one stream over all videos), got {idx_start!r}"
            )
        s = int(idx_start)
        if not 0 <= s < sum(num_frames):
            raise ConfigError(f"tracking.idx_start={s} is outside the session's {sum(num_frames)} frames")
        return [s]
    if np.ndim(idx_start) == 0:
        starts = [int(idx_start)] * len(num_frames)
    else:  # fix: the reference crashes on a list (int(list))
        starts = [int(v) for v in idx_start]
        if len(starts) != len(num_frames):
            raise ConfigError(
                f"tracking.idx_start has {len(starts)} values but the session has "
                f"{len(num_frames)} videos; give one start per video or a single integer"
            )
    for i, (s, n) in enumerate(zip(starts, num_frames)):
        if not 0 <= s < n:
            raise ConfigError(f"tracking.idx_start={s} is outside video {i} ({n} frames)")
    return starts


def _check_freeze(frames_freeze, num_frames: Sequence[int]) -> np.ndarray | None:
    """frames_freeze as bool (sum(num_frames),), or None."""
    if frames_freeze is None:
        return None
    total = sum(num_frames)
    frames_freeze = np.asarray(frames_freeze, dtype=bool)
    if frames_freeze.shape != (total,):
        raise ConfigError(
            f"frames_freeze has {frames_freeze.size} entries but the session has "
            f"{total} frames ({' + '.join(map(str, num_frames))}); give one value per frame"
        )
    return frames_freeze


def _read_rgb(path: str, first: int, n: int, rkw: dict):
    """RGB chunks of frames [first, n) of one video: on the CPU PyAV's in-order decode
    (the same frames, less CPU beside the tracker's threads, :mod:`facerhythm_core.rgb_reader`), else
    torchcodec on the decode device."""
    from .rgb_reader import iter_rgb_chunks
    from .video import iter_frame_chunks

    if rkw["device"] == "cpu":
        return iter_rgb_chunks(path, rkw["chunk_size"], start=first, n_frames=n, prefetch=rkw["prefetch"])
    return iter_frame_chunks(path, start=first, n_frames=n, **rkw)


def track_session(
    video_paths: Sequence[str | Path],
    point_positions: np.ndarray,
    mask: np.ndarray | None,
    params: TrackingParams | None = None,
    *,
    num_frames: Sequence[int] | None = None,
    contiguous: bool = False,
    idx_start: int | Sequence[int] = 0,
    frames_freeze: np.ndarray | None = None,
    chunk_size: int = 128,
    prefetch: int = 2,
    decode_device: str = "cpu",
    device: str = "cpu",
    neighbors: np.ndarray | None = None,
    out_factory: Callable[[str, tuple], object] | None = None,
) -> SessionTracking:
    """Track a session's videos, as one stream (contiguous) or restarting per video.

    Parameters
    ----------
    video_paths : sequence of paths
        The session's videos in order.
    point_positions : ndarray, (N, 2)
        Home positions (x, y).
    mask : ndarray, bool, (H, W), or None
        Tracking mask (None = whole frame).
    params : TrackingParams
    num_frames : sequence of int, optional
        Frames per video (probed when omitted).
    contiguous : bool
        True: one stream over all videos, key "0", motion across a file boundary tracked
        as between consecutive frames. False: every video starts again from the home
        positions on its own first frame, keys "0", "1", ...
    idx_start : int or sequence of int
        First frame to track: a global frame index when contiguous; otherwise one value
        for every video or one per video.
    frames_freeze : ndarray, bool, (sum(num_frames),), optional
        Global over the session; sliced per video when not contiguous.
    chunk_size, prefetch, decode_device
        Reader settings (:func:`facerhythm_core.video.iter_frame_chunks`; on the CPU the
        frames come from :func:`facerhythm_core.rgb_reader.iter_rgb_chunks`).
    device : {"cpu", "auto", "cuda"}
        LK/CLAHE backend.
    neighbors : ndarray, (N, k), optional
        Mesh neighbour sets to use instead of :func:`build_mesh`.
    out_factory : callable(key, shape) -> array-like, optional
        Makes the (T, N, 2) output for each key (e.g. an h5py dataset), so positions are
        written as tracking goes instead of held in memory.

    Returns
    -------
    SessionTracking
    """
    from .video import probe_video

    params = params or TrackingParams()
    paths = [str(p) for p in video_paths]
    if not paths:
        raise VideoError("a session needs at least one video")
    if num_frames is None:
        num_frames = [probe_video(p).num_frames for p in paths]
    num_frames = [int(n) for n in num_frames]
    if len(num_frames) != len(paths):
        raise VideoError(f"{len(paths)} videos but {len(num_frames)} frame counts")
    total = sum(num_frames)
    frames_freeze = _check_freeze(frames_freeze, num_frames)
    home = np.asarray(point_positions, dtype=np.float32)
    if neighbors is None:
        neighbors, d0 = build_mesh(home, params.mesh_n_neighbors)
    else:
        neighbors = np.asarray(neighbors, dtype=np.int64)
        d0 = mesh_offsets(home, neighbors)
    starts = _resolve_starts(idx_start, num_frames, contiguous)
    # colour chunks: the tracker crops before graying, far cheaper than graying whole
    # frames in the reader; smaller chunks keep the 3x larger colour buffers small
    # one FFmpeg thread: decoding is the lightest of the tracker's three pipelined stages,
    # and frame threading would spend more CPU per frame on a machine that is already busy
    rkw = dict(
        chunk_size=max(1, min(int(chunk_size), 32)),
        gray=False,
        device=decode_device,
        prefetch=prefetch,
        decode_threads=1,
    )

    def make_out(key, T):
        return out_factory(key, (T, len(home), 2)) if out_factory is not None else None

    results = {}
    if contiguous:
        start = starts[0]

        def chunks():
            off = 0
            for p, n in zip(paths, num_frames):
                if off + n > start:
                    for s, fr in _read_rgb(p, max(0, start - off), n, rkw):
                        yield off + s, fr
                off += n

        results["0"] = track_stream(
            chunks(),
            home,
            mask,
            params,
            n_frames=total,
            start=start,
            frames_freeze=frames_freeze,
            neighbors=neighbors,
            out=make_out("0", total),
            device=device,
            label=f"contiguous ({len(paths)} videos)",
        )
    else:
        off = 0
        for i, (p, n, s) in enumerate(zip(paths, num_frames, starts)):
            ff = None if frames_freeze is None else frames_freeze[off : off + n]
            results[str(i)] = track_stream(
                _read_rgb(p, s, n, rkw),
                home,
                mask,
                params,
                n_frames=n,
                start=s,
                frames_freeze=ff,
                neighbors=neighbors,
                out=make_out(str(i), n),
                device=device,
                label=f"video {i} ({Path(p).name})",
            )
            off += n
    if mask is None:
        H, W = probe_video(paths[0]).height, probe_video(paths[0]).width
        mask = np.ones((H, W), dtype=bool)
    return SessionTracking(
        results=results,
        point_positions=home,
        neighbors=neighbors,
        mesh_d0=d0,
        mask=np.asarray(mask, dtype=bool),
        contiguous=bool(contiguous),
        video_paths=paths,
        num_frames=num_frames,
        params=params,
    )


def write_tracking_h5(
    f, session: SessionTracking, frame_rate: float, clocks: Mapping[str, Mapping] | None = None
) -> None:
    """Write a :class:`SessionTracking` into an open, writable h5py File.

    Layout (readable with h5py alone): ``point_positions``, ``points_tracked/{key}``
    (skipped when already written there by ``out_factory``), ``violations/{key}/{row,
    col,data,shape}``, ``violation_fraction``, ``neighbors``, ``mesh_d0``, ``mask``,
    ``video_paths``, ``num_frames``; attributes ``frame_rate``, ``contiguous``,
    ``num_keys``. With ``clocks`` (key -> ``{"times", "clock"}``, see
    :func:`facerhythm_core.timing.stream_clocks`): ``timestamps/{key}`` float64 (T,)
    seconds on the session clock, attribute ``clock`` ("regular", "resample" or
    "ignore"). Provenance is the caller's (``write_provenance``).
    """
    import h5py

    f.create_dataset("point_positions", data=session.point_positions.astype(np.float32))
    g = f.require_group("points_tracked")
    gv = f.require_group("violations")
    for key in sorted(session.results, key=int):
        r = session.results[key]
        if key not in g:
            g.create_dataset(key, data=np.asarray(r.points, dtype=np.float32))
        coo = r.violations_coo()
        gk = gv.create_group(key)
        for name in ("row", "col", "data", "shape"):
            gk.create_dataset(name, data=coo[name])
        gk.attrs["n_rewinds"] = r.n_rewinds
        gk.attrs["rewinds_capped"] = r.rewinds_capped
        g[key].attrs["idx_start"] = r.start
        g[key].attrs["n_frames_processed"] = r.n_frames_processed
    f.create_dataset("violation_fraction", data=session.violation_fraction)
    f.create_dataset("neighbors", data=session.neighbors.astype(np.int64))
    f.create_dataset("mesh_d0", data=session.mesh_d0.astype(np.float32))
    f.create_dataset("mask", data=session.mask.astype(bool), compression="gzip")
    f.create_dataset("video_paths", data=session.video_paths, dtype=h5py.string_dtype())
    f.create_dataset("num_frames", data=np.asarray(session.num_frames, dtype=np.int64))
    for key, c in (clocks or {}).items():
        ds = f.create_dataset(f"timestamps/{key}", data=np.asarray(c["times"], np.float64))
        ds.attrs["clock"] = str(c["clock"])
        ds.attrs["units"] = "s"
    f.attrs["frame_rate"] = float(frame_rate)
    f.attrs["contiguous"] = bool(session.contiguous)
    f.attrs["num_keys"] = len(session.results)
