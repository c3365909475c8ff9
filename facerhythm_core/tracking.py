"""Point tracking: pyramidal Lucas-Kanade with an elastic k-NN mesh (reference PointTracker).

The algorithm is face-rhythm 0.3.3's ``PointTracker`` (see ``docs/tracking.md``):

1. every frame is reduced to gray (equal-weight mean, truncated), masked to the tracking
   mask and contrast-equalised with CLAHE;
2. points move by pyramidal LK from the previous processed frame;
3. points flagged as violating in the previous frame are held in place;
4. a mesh force pulls each point's offset from the mean of its k-NN set back to its
   initial value, then a spring pulls every point toward its home position;
5. points farther than ``threshold_displacement`` from home (grown by their k-NN sets)
   are flagged for ``frames_halted_before`` frames before and ``frames_halted_after``
   frames after, and tracking rewinds ``frames_halted_before`` frames and replays.

The reference's bugs are fixed on purpose (listed in ``docs/tracking.md``); the
``legacy_rewind`` parameter restores the one that changes trajectories, for comparisons.

Everything works on arrays: :func:`track_stream` takes any iterable of
``(first_index, gray uint8 (n, H, W))`` chunks, so tests need no video files.
:func:`facerhythm_core.tracking_session.track_session` runs it over a session's videos
with :func:`facerhythm_core.video.iter_frame_chunks`. The mesh is in
:mod:`facerhythm_core.mesh`, the per-frame preprocessing in :mod:`facerhythm_core.preprocess`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import numpy as np

from .errors import ConfigError, ROIError, VideoError
from .mesh import apply_mesh, apply_relaxation, build_mesh, grow_violations, mesh_offsets  # noqa: F401
from .preprocess import FramePreprocessor, preprocess_frame  # noqa: F401
from .background import run_ahead
from .tracking_buffers import PIECE, FrameCache, RowStore
from .tracking_params import TrackingParams

logger = logging.getLogger(__name__)

__all__ = [
    "TrackingParams",
    "TrackingResult",
    "select_tracking_backend",
    "track_stream",
    "violations_to_coo",
]


# --------------------------------------------------------------------------- LK backends


def select_tracking_backend(device: str = "cpu") -> str:
    """'cuda' when OpenCV was built with CUDA and sees a device, else 'cpu' (logged).

    PyPI OpenCV wheels have no CUDA, so 'auto' and 'cuda' usually end up on 'cpu'.
    """
    import cv2

    req = str(device).lower()
    if req not in ("auto", "cpu", "cuda") and not req.startswith("cuda"):
        raise ConfigError(f"tracking.device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if req == "cpu":
        logger.info("tracking backend: OpenCV CPU (requested)")
        return "cpu"
    n = 0
    try:
        n = cv2.cuda.getCudaEnabledDeviceCount() if hasattr(cv2, "cuda") else 0
    except cv2.error:  # built without CUDA support
        n = 0
    if n > 0:
        logger.info("tracking backend: OpenCV CUDA (%d device(s))", n)
        return "cuda"
    msg = "tracking backend: OpenCV CPU (this OpenCV build has no CUDA device; PyPI wheels never do)"
    if req == "auto":
        logger.info(msg)
    else:
        logger.warning("tracking.device=%s requested but %s", device, msg[len("tracking backend: ") :])
    return "cpu"


class _CpuLK:
    def __init__(self, params: TrackingParams):
        import cv2

        self.cv2 = cv2
        self.kw = dict(winSize=params.win_size, maxLevel=params.max_level, criteria=params.criteria)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray) -> np.ndarray:
        q, _status, _err = self.cv2.calcOpticalFlowPyrLK(prev, nxt, pts.reshape(-1, 1, 2), None, **self.kw)
        return q.reshape(-1, 2)


class _CudaLK:  # pragma: no cover - needs an OpenCV build with CUDA
    """Sparse pyramidal LK on the GPU (CLAHE stays on the CPU preprocessing thread).

    Unlike the reference, the iteration count from ``criteria`` is passed on; OpenCV's
    CUDA LK has no epsilon criterion, so results still differ slightly from the CPU's.
    """

    def __init__(self, params: TrackingParams):
        import cv2

        self.cv2 = cv2
        make = getattr(cv2.cuda, "SparsePyrLKOpticalFlow_create", None) or cv2.cuda.SparsePyrLKOpticalFlow.create
        self.lk = make(winSize=params.win_size, maxLevel=params.max_level, iters=int(params.criteria[1]))

    def _gpu(self, arr):
        g = self.cv2.cuda_GpuMat()
        g.upload(np.ascontiguousarray(arr))
        return g

    def __call__(self, prev, nxt, pts):
        q, _status, _err = self.lk.calc(
            self._gpu(prev), self._gpu(nxt), self._gpu(pts.reshape(1, -1, 2).astype(np.float32)), None
        )
        return q.download().reshape(-1, 2)


# --------------------------------------------------------------------------- results


@dataclass
class TrackingResult:
    """Output of :func:`track_stream` for one stream of frames.

    Attributes
    ----------
    points : ndarray or array-like, float32, shape (T, N, 2)
        Positions (x, y) per frame; rows before ``start`` hold the home positions.
        The ``out`` object when one was given.
    violations : dict[int, ndarray of bool (N,)]
        Rows of the (T, N) violation matrix that have any flag.
    n_frames : int
    start : int
    n_rewinds : int
    n_frames_processed : int
        Frames processed including replays.
    seconds : float
    """

    points: object
    violations: dict
    n_frames: int
    n_points: int
    start: int = 0
    n_rewinds: int = 0
    n_frames_processed: int = 0
    seconds: float = 0.0
    rewinds_capped: bool = False

    @property
    def violation_fraction(self) -> float:
        """Fraction of the T frames with any violation (a float, not truncated)."""
        rows = sum(1 for v in self.violations.values() if v.any())
        return rows / self.n_frames if self.n_frames else 0.0

    def violations_coo(self) -> dict:
        return violations_to_coo(self.violations, (self.n_frames, self.n_points))

    def violations_dense(self) -> np.ndarray:
        v = np.zeros((self.n_frames, self.n_points), dtype=bool)
        for r, row in self.violations.items():
            v[r] = row
        return v


def violations_to_coo(violations: Mapping[int, np.ndarray], shape: tuple[int, int]) -> dict:
    """Sparse rows {t: bool (N,)} -> COO {'row' int32, 'col' int32, 'data' bool, 'shape' int64}."""
    rows, cols = [], []
    for r in sorted(violations):
        c = np.flatnonzero(violations[r])
        rows.append(np.full(len(c), r, dtype=np.int32))
        cols.append(c.astype(np.int32))
    row = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int32)
    return {"row": row, "col": col, "data": np.ones(len(row), dtype=bool), "shape": np.asarray(shape, dtype=np.int64)}


# --------------------------------------------------------------------------- the tracker


class _StreamTracker:
    """The frame loop of one stream: LK, forces, violation rows, rewinds and progress.

    Positions are float32 (N, 2) (x, y) in frame pixels; frames come from ``cache``
    already preprocessed, in the crop's coordinates (``offset`` (2,) = its origin).
    """

    def __init__(self, params, home, neighbors, d0, lk, offset, cache, store, frames_freeze, start, T, label):
        self.params = params
        self.home, self.neighbors, self.d0 = home, neighbors, d0
        self.lk, self.offset = lk, offset
        self.cache, self.store = cache, store
        self.frames_freeze = frames_freeze
        self.start, self.T, self.label = start, T, label
        self.rho, self.lam = np.float32(params.mesh_rigidity), np.float32(params.relaxation)
        self.theta2 = float(params.threshold_displacement) ** 2
        self.violations: dict[int, np.ndarray] = {}
        self.no_viol = np.zeros(len(home), dtype=bool)
        self.vmask = self.no_viol  # rows of points held in place on the next frame
        self.n_rewinds = 0
        self.capped = False
        self.processed = 0
        self.f_prev = self.p_prev = None

    def run(self) -> None:
        """Track frames ``start`` .. ``T - 1``, replaying after every allowed rewind."""
        B = self.params.frames_halted_before
        t = self.start
        self.f_prev = self.cache.get(t)
        self.p_prev = self.home.copy()
        self._log_t, self._log_n = time.perf_counter(), 0
        while t < self.T:
            f_t = self.cache.get(t)
            q = self._move(t, f_t)
            self.store.flush(t, keep_from=min(self.cache.oldest(), t - B - 1))
            self.store.set(t, q)
            self.processed += 1
            flagged = self._flag(t, q)
            if flagged is not None:
                if self._may_rewind():
                    t = self._rewind(t, flagged)
                    continue
                self._note_cap(t)
            self.f_prev, self.p_prev = f_t, q
            t += 1
            self._log_progress(t)
        self.store.finish()

    def _move(self, t: int, f_t: np.ndarray) -> np.ndarray:
        """Positions on frame t: LK from the previous frame (or none on a frozen frame),
        flagged points held, then the mesh and relaxation forces."""
        freeze = self.frames_freeze is not None and self.frames_freeze[t]
        if freeze and not self.params.relaxation_during_freeze_frames:
            return self.p_prev.copy()
        if freeze:
            q = self.p_prev.copy()
        elif self.offset is not None:
            q = self.lk(self.f_prev, f_t, self.p_prev - self.offset) + self.offset
        else:
            q = self.lk(self.f_prev, f_t, self.p_prev)
        if self.vmask is not self.no_viol:
            q[self.vmask] = self.p_prev[self.vmask]
        if self.rho != 0:
            q = apply_mesh(q, self.neighbors, self.d0, self.rho)
        if self.lam != 0:
            q = apply_relaxation(q, self.home, self.lam)
        return q

    def _flag(self, t: int, q: np.ndarray) -> np.ndarray | None:
        """Flag points beyond the threshold (grown through the mesh) on frames t - B .. t + A - 1.

        Returns the flags (N,) bool when any point is flagged, else None; sets the
        points to hold on the next frame.
        """
        d = q - self.home
        flagged = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) > self.theta2
        event = bool(flagged.any())
        if event:
            grown = grow_violations(flagged, self.neighbors)
            B, A = self.params.frames_halted_before, self.params.frames_halted_after
            for r in range(max(t - B, self.start), min(t + A, self.T)):  # never before the start
                row = self.violations.get(r)
                if row is None:
                    self.violations[r] = grown.copy()
                else:
                    row |= grown
        vmask = self.violations.get(t, self.no_viol)
        self.vmask = vmask if vmask.any() else self.no_viol
        return flagged if event else None

    def _may_rewind(self) -> bool:
        return self.params.max_rewinds is None or self.n_rewinds < self.params.max_rewinds

    def _rewind(self, t: int, flagged: np.ndarray) -> int:
        """Go back B frames from t (no further than the buffered frames allow); returns
        the frame to track next and sets the frame and positions to track it from."""
        self.n_rewinds += 1
        start, cache = self.start, self.cache
        t_new = max(t - self.params.frames_halted_before, start)
        if max(t_new - 1, start) < cache.oldest():
            # only after cascading rewinds: the frames before are no longer buffered
            t_new = cache.oldest() + 1
            logger.warning("%s: rewind limited to frame %d (older frames are no longer buffered)", self.label, t_new)
        if self.params.legacy_rewind:
            self.p_prev = self.store.get(t_new)
            self.f_prev = cache.get(max(t_new - 1, start))
        elif t_new > start:
            self.p_prev = self.store.get(t_new - 1)
            self.f_prev = cache.get(t_new - 1)
        else:
            self.p_prev = self.home.copy()
            self.f_prev = cache.get(start)
        logger.debug("%s: violation at frame %d (%d points); rewind to %d", self.label, t, int(flagged.sum()), t_new)
        return t_new

    def _note_cap(self, t: int) -> None:
        if not self.capped:
            self.capped = True
            logger.warning(
                "%s: max_rewinds=%s reached at frame %d; further violations hold points without rewinding",
                self.label,
                self.params.max_rewinds,
                t,
            )

    def _log_progress(self, t: int) -> None:
        if self.processed - self._log_n < self.params.progress_every:
            return
        now = time.perf_counter()
        fps = (self.processed - self._log_n) / max(now - self._log_t, 1e-9)
        eta = (self.T - t) / fps if fps > 0 else float("inf")
        logger.info(
            "%s: frame %d/%d, %.1f frames/s, ETA %.0f s, %d rewinds", self.label, t, self.T, fps, eta, self.n_rewinds
        )
        self._log_t, self._log_n = now, self.processed


def _check_stream(point_positions, n_frames, start, frames_freeze, label):
    """Validated home (N, 2) float32, T, start and frames_freeze ((T,) bool or None)."""
    home = np.asarray(point_positions, dtype=np.float32)
    if home.ndim != 2 or home.shape[1] != 2 or len(home) == 0:
        raise ROIError(f"point_positions must be a non-empty (N, 2) array, got shape {home.shape}")
    T, start = int(n_frames), int(start)
    if T < 1:
        raise VideoError(f"{label}: a stream needs at least one frame")
    if not 0 <= start < T:
        raise ConfigError(
            f"tracking.idx_start={start} is outside {label} (frames 0..{T - 1}); choose a start inside the video"
        )
    if frames_freeze is not None:
        frames_freeze = np.asarray(frames_freeze, dtype=bool)
        if frames_freeze.shape != (T,):
            raise ConfigError(f"frames_freeze for {label} has shape {frames_freeze.shape}, expected ({T},)")
        if not frames_freeze.any():
            frames_freeze = None
    return home, T, start, frames_freeze


def _stream_mesh(home, neighbors, n_neighbors):
    """Neighbour sets (N, k) int64 and initial mesh offsets d0 (N, 2) float32."""
    if neighbors is None:
        return build_mesh(home, n_neighbors)
    N = len(home)
    neighbors = np.asarray(neighbors, dtype=np.int64)
    if neighbors.ndim != 2 or len(neighbors) != N or neighbors.min() < 0 or neighbors.max() >= N:
        raise ConfigError(f"neighbors must be (N={N}, k) indices into the points, got {neighbors.shape}")
    return neighbors, mesh_offsets(home, neighbors)


def _with_mask(chunks, mask, label):
    """The chunk iterator and the mask; None = the whole frame, sized from the first chunk."""
    it = iter(chunks)
    if mask is not None:
        return it, mask
    first = next(it, None)
    if first is None:
        raise VideoError(f"{label}: no frames")

    def again():
        yield first
        yield from it

    return again(), np.ones(first[1].shape[1:3], dtype=bool)


def _preprocessed(chunks, prep: FramePreprocessor, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """Preprocessed pieces of at most PIECE frames from frame ``start`` on."""
    for s, fr in chunks:
        if s + len(fr) <= start:
            continue
        if s < start:
            fr, s = fr[start - s :], start
        for a in range(0, len(fr), PIECE):
            yield s + a, prep.process_chunk(fr[a : a + PIECE])


def _output_rows(out, home, T, start):
    """The (T, N, 2) output (new float32 when None), rows before ``start`` = home."""
    N = len(home)
    if out is None:
        out = np.empty((T, N, 2), dtype=np.float32)
    if start > 0:  # fix: rows before the start are the home positions, not zeros
        for s in range(0, start, 4096):
            e = min(s + 4096, start)
            out[s:e] = np.broadcast_to(home, (e - s, N, 2))
    return out


def track_stream(
    chunks: Iterable[tuple[int, np.ndarray]],
    point_positions: np.ndarray,
    mask: np.ndarray | None,
    params: TrackingParams | None = None,
    *,
    n_frames: int,
    start: int = 0,
    frames_freeze: np.ndarray | None = None,
    neighbors: np.ndarray | None = None,
    out=None,
    device: str = "cpu",
    label: str = "stream",
    preprocess_ahead: bool = True,
) -> TrackingResult:
    """Track points through one stream of gray frames.

    Parameters
    ----------
    chunks : iterable of (first_index, ndarray uint8 (n, H, W))
        Consecutive gray frames of the stream, starting at frame ``start`` (earlier
        chunks are accepted and skipped). ``iter_frame_chunks`` output fits.
    point_positions : ndarray, shape (N, 2)
        Home positions (x, y) in pixels.
    mask : ndarray, bool, shape (H, W), or None
        Tracking mask (None = the whole frame; then the frame size is taken from the
        first chunk).
    params : TrackingParams
    n_frames : int
        T, frames in the stream (the output has T rows).
    start : int
        First frame to track; rows before it hold the home positions.
    frames_freeze : ndarray, bool, shape (T,), optional
        Frames on which optical flow is ignored.
    neighbors : ndarray, int, shape (N, k), optional
        Mesh neighbour sets to use instead of :func:`build_mesh` (e.g. the reference's
        own, for comparisons).
    out : array-like with slice assignment, shape (T, N, 2), optional
        Where to write positions (an ``h5py`` dataset keeps memory flat in T). Default:
        a new float32 array.
    device : {"cpu", "auto", "cuda"}
        LK/CLAHE backend (see :func:`select_tracking_backend`).
    label : str
        Name used in log lines.
    preprocess_ahead : bool
        Mask + CLAHE the next chunk in a background thread while tracking this one.

    Returns
    -------
    TrackingResult
    """
    params = params or TrackingParams()
    home, T, start, frames_freeze = _check_stream(point_positions, n_frames, start, frames_freeze, label)
    neighbors, d0 = _stream_mesh(home, neighbors, params.mesh_n_neighbors)
    it, mask = _with_mask(chunks, mask, label)
    prep = FramePreprocessor(
        mask,
        params.clahe_clip_limit,
        params.clahe_tile_grid_size,
        crop=params.crop,
        win_size=params.win_size,
        max_level=params.max_level,
    )
    H, W = prep.frame_shape
    if np.any(home[:, 0] < 0) or np.any(home[:, 1] < 0) or np.any(home[:, 0] > W - 1) or np.any(home[:, 1] > H - 1):
        raise ROIError(f"{label}: seed points lie outside the {W}x{H} frame; ROIs and video do not match")
    logger.info("%s: %d points, %d frames from %d, %s", label, len(home), T, start, prep)

    frames_iter = _preprocessed(it, prep, start)
    if preprocess_ahead:
        frames_iter = run_ahead(frames_iter, maxsize=1, name="track-preprocess")
    B = params.frames_halted_before
    backend = select_tracking_backend(device) if device != "cpu" else "cpu"
    out = _output_rows(out, home, T, start)
    tracker = _StreamTracker(
        params,
        home,
        neighbors,
        d0,
        lk=_CudaLK(params) if backend == "cuda" else _CpuLK(params),
        offset=np.array(prep.offset, dtype=np.float32) if prep.cropped else None,
        cache=FrameCache(frames_iter, first=start, lookback=B + 2),
        store=RowStore(out, start, len(home), block=max(1024, 2 * (B + 2 + PIECE))),
        frames_freeze=frames_freeze,
        start=start,
        T=T,
        label=label,
    )
    t0 = time.perf_counter()
    try:
        tracker.run()
    finally:
        close = getattr(frames_iter, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t0
    res = TrackingResult(
        points=out,
        violations=tracker.violations,
        n_frames=T,
        n_points=len(home),
        start=start,
        n_rewinds=tracker.n_rewinds,
        n_frames_processed=tracker.processed,
        seconds=seconds,
        rewinds_capped=tracker.capped,
    )
    logger.info(
        "%s: done, %d frames (%d processed incl. replays) in %.1f s (%.1f frames/s), "
        "%d rewinds, violation fraction %.4f",
        label,
        T - start,
        res.n_frames_processed,
        seconds,
        res.n_frames_processed / max(seconds, 1e-9),
        res.n_rewinds,
        res.violation_fraction,
    )
    return res
