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
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Iterator, Mapping

import numpy as np

from .errors import ConfigError, ROIError, VideoError
from .mesh import apply_mesh, apply_relaxation, build_mesh, grow_violations, mesh_offsets  # noqa: F401
from .preprocess import FramePreprocessor, preprocess_frame  # noqa: F401
from .background import run_ahead

logger = logging.getLogger(__name__)

__all__ = [
    "TrackingParams",
    "TrackingResult",
    "select_tracking_backend",
    "track_stream",
    "violations_to_coo",
]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class TrackingParams:
    """Parameters of the tracker. Defaults are the reference pipeline defaults (§3.1).

    Attributes
    ----------
    mesh_rigidity : float
        rho, strength of the k-NN mesh force (per frame, dimensionless).
    mesh_n_neighbors : int
        k, size of each point's neighbour set, the point itself included.
    relaxation : float
        lambda in [0, 1], fraction of the way back to the home position per frame.
    win_size : (int, int)
        LK window (width, height) in pixels.
    max_level : int
        LK pyramid levels above the base image.
    criteria : (int, int, float)
        OpenCV termination criteria (type flags, max iterations, epsilon in pixels).
    clahe_clip_limit : float or None
        CLAHE clip limit; None turns CLAHE off.
    clahe_tile_grid_size : (int, int)
        CLAHE tile *count* (along x, along y), as OpenCV's ``tileGridSize``.
    threshold_displacement : float
        Distance from home (pixels) beyond which a point violates.
    frames_halted_before, frames_halted_after : int
        B and A: frames before / after a violation during which flagged points are held;
        a violation rewinds tracking by B frames.
    max_rewinds : int or None
        Rewinds allowed per stream; past it violations still hold points but no longer
        rewind. None = unbounded (the reference; can loop for a long time).
    relaxation_during_freeze_frames : bool
        On ``frames_freeze`` frames, still apply mesh and relaxation (True) or copy the
        previous positions unchanged (False).
    crop : bool
        Process only the tracking mask's bounding box plus a margin (faster; identical
        up to float rounding, see ``docs/tracking.md``). False = full frames, exactly as
        the reference.
    legacy_rewind : bool
        Reproduce the reference's rewind bug (the replay starts from the stale
        positions of the rewind frame instead of the frame before). For comparisons only.
    progress_every : int
        Log a progress line every this many processed frames.
    """

    mesh_rigidity: float = 0.025
    mesh_n_neighbors: int = 8
    relaxation: float = 0.0015
    win_size: tuple[int, int] = (20, 20)
    max_level: int = 2
    criteria: tuple[int, int, float] = (3, 2, 0.03)
    clahe_clip_limit: float | None = 40.0
    clahe_tile_grid_size: tuple[int, int] = (150, 150)
    threshold_displacement: float = 150.0
    frames_halted_before: int = 10
    frames_halted_after: int = 10
    max_rewinds: int | None = 1000
    relaxation_during_freeze_frames: bool = True
    crop: bool = True
    legacy_rewind: bool = False
    progress_every: int = 500

    def __post_init__(self):
        def bad(key, why):
            raise ConfigError(f"tracking.{key}: {why}")

        if not (self.mesh_rigidity >= 0 and math.isfinite(self.mesh_rigidity)):
            bad("mesh_rigidity", f"must be a finite number >= 0, got {self.mesh_rigidity!r}")
        if int(self.mesh_n_neighbors) < 1:
            bad("mesh_n_neighbors", f"must be >= 1 (the point itself counts), got {self.mesh_n_neighbors!r}")
        if not 0 <= self.relaxation <= 1:
            bad("relaxation", f"must lie in [0, 1], got {self.relaxation!r}")
        if len(self.win_size) != 2 or min(self.win_size) < 3:
            bad("win_size", f"must be two integers >= 3 (width, height), got {self.win_size!r}")
        if int(self.max_level) < 0:
            bad("max_level", f"must be >= 0, got {self.max_level!r}")
        if (
            len(self.criteria) != 3
            or int(self.criteria[0]) not in (1, 2, 3)
            or int(self.criteria[1]) < 1
            or not float(self.criteria[2]) >= 0
        ):
            bad(
                "criteria",
                "must be [type, max_iter, eps] with type 1 (COUNT), 2 (EPS) or 3 "
                f"(both), max_iter >= 1 and eps >= 0; got {self.criteria!r}",
            )
        if self.clahe_clip_limit is not None:
            if not self.clahe_clip_limit > 0:
                bad(
                    "clahe.clip_limit",
                    f"must be > 0 (use clahe: null to turn CLAHE off), got {self.clahe_clip_limit!r}",
                )
            if len(self.clahe_tile_grid_size) != 2 or min(self.clahe_tile_grid_size) < 1:
                bad("clahe.tile_grid_size", f"must be two integers >= 1, got {self.clahe_tile_grid_size!r}")
        if not self.threshold_displacement > 0:
            bad("threshold_displacement", f"must be > 0 pixels, got {self.threshold_displacement!r}")
        if int(self.frames_halted_before) < 0 or int(self.frames_halted_after) < 0:
            bad("frames_halted_before/after", "must be >= 0")
        if self.max_rewinds is not None and int(self.max_rewinds) < 0:
            bad("max_rewinds", f"must be >= 0 or null, got {self.max_rewinds!r}")
        if int(self.progress_every) < 1:
            bad("progress_every", f"must be >= 1, got {self.progress_every!r}")
        # normalise types so that equality and provenance are stable
        object.__setattr__(self, "win_size", (int(self.win_size[0]), int(self.win_size[1])))
        object.__setattr__(self, "criteria", (int(self.criteria[0]), int(self.criteria[1]), float(self.criteria[2])))
        object.__setattr__(
            self, "clahe_tile_grid_size", (int(self.clahe_tile_grid_size[0]), int(self.clahe_tile_grid_size[1]))
        )
        for k in ("mesh_n_neighbors", "max_level", "frames_halted_before", "frames_halted_after", "progress_every"):
            object.__setattr__(self, k, int(getattr(self, k)))

    @classmethod
    def from_config(cls, cfg: Mapping) -> "TrackingParams":
        """Build from the config's ``tracking`` section (schema names).

        Unknown keys that belong to the workflow (``device``, ``contiguous``,
        ``idx_start``) are ignored here; anything else unknown is an error.
        """
        cfg = dict(cfg)
        known_elsewhere = {"device", "contiguous", "idx_start"}
        kw: dict = {}
        clahe_given = "clahe" in cfg
        clahe = cfg.pop("clahe", None)
        if clahe_given:
            if clahe is None:
                kw["clahe_clip_limit"] = None
            else:
                extra = set(clahe) - {"clip_limit", "tile_grid_size"}
                if extra:
                    raise ConfigError(
                        f"tracking.clahe: unknown keys {sorted(extra)}; allowed: clip_limit, tile_grid_size"
                    )
                kw["clahe_clip_limit"] = float(clahe.get("clip_limit", 40.0))
                kw["clahe_tile_grid_size"] = tuple(clahe.get("tile_grid_size", (150, 150)))
        fields = set(cls.__dataclass_fields__)
        for k, v in cfg.items():
            if k in known_elsewhere:
                continue
            if k not in fields:
                raise ConfigError(f"tracking.{k}: unknown parameter. Known: {sorted(fields | known_elsewhere)}")
            kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    @classmethod
    def reference_pipeline(cls, **overrides) -> "TrackingParams":
        """Exactly the reference pipeline's settings (§3.1), for trajectory comparisons.

        Full frames (no crop), unbounded rewinds and the reference's stale-rewind
        behaviour. Neighbour ties still break deterministically (pass the reference's
        ``neighbors`` to :func:`track_stream` to reproduce its mesh exactly).
        """
        return replace(cls(crop=False, max_rewinds=None, legacy_rewind=True), **overrides)

    @classmethod
    def reference_class_defaults(cls, **overrides) -> "TrackingParams":
        """The reference ``PointTracker`` constructor's own defaults (§3.2)."""
        return replace(
            cls(
                mesh_rigidity=0.005,
                mesh_n_neighbors=10,
                relaxation=0.5,
                win_size=(15, 15),
                max_level=2,
                criteria=(3, 10, 0.03),
                threshold_displacement=25.0,
                frames_halted_before=30,
                frames_halted_after=30,
                crop=False,
                max_rewinds=None,
                legacy_rewind=True,
            ),
            **overrides,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lk_criteria(self) -> tuple[int, int, float]:
        return self.criteria


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


# --------------------------------------------------------------------------- streaming helpers

_PIECE = 32  # frames per preprocessed piece


class _FrameCache:
    """Preprocessed frames by index, pulled chunk by chunk; keeps ``lookback`` frames
    behind the newest for rewinds (no re-decoding)."""

    def __init__(self, chunks: Iterator[tuple[int, np.ndarray]], first: int, lookback: int):
        self._it = chunks
        self._chunks: list[tuple[int, np.ndarray]] = []
        self._next = first  # index the next chunk must start at
        self.lookback = lookback

    def oldest(self) -> int:
        return self._chunks[0][0] if self._chunks else self._next

    def get(self, i: int) -> np.ndarray:
        while i >= self._next:
            try:
                s, arr = next(self._it)
            except StopIteration:
                raise VideoError(
                    f"the frame stream ended at frame {self._next} but frame {i} "
                    "was expected; the video is shorter than its reported length"
                ) from None
            if s != self._next:
                raise VideoError(f"frame chunks are not contiguous: expected a chunk at {self._next}, got {s}")
            self._chunks.append((s, arr))
            self._next = s + len(arr)
            keep_from = i - self.lookback
            while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= keep_from:
                self._chunks.pop(0)
        for s, arr in reversed(self._chunks):
            if s <= i < s + len(arr):
                return arr[i - s]
        raise VideoError(f"frame {i} is no longer buffered (oldest kept: {self.oldest()})")


class _RowStore:
    """Rows of the (T, N, 2) trajectory: recent rows in memory, older ones flushed to ``out``."""

    def __init__(self, out, start: int, n_points: int, block: int = 1024):
        self.out = out
        self.direct = isinstance(out, np.ndarray)
        if not self.direct:
            self.buf = np.empty((block, n_points, 2), dtype=np.float32)
            self.base = start  # frame index of buf[0]
            self.filled = start  # rows [base, filled) are valid in buf

    def set(self, t: int, row: np.ndarray):
        if self.direct:
            self.out[t] = row
            return
        if t - self.base >= len(self.buf):
            raise AssertionError("flush() must be called before the buffer overflows")
        self.buf[t - self.base] = row
        self.filled = max(self.filled, t + 1)

    def get(self, t: int) -> np.ndarray:
        if self.direct:
            return np.array(self.out[t])
        if t < self.base:
            return np.asarray(self.out[t], dtype=np.float32)
        return self.buf[t - self.base].copy()

    def flush(self, t: int, keep_from: int):
        """Make room before writing row ``t``: rows < keep_from will not change again."""
        if self.direct or t - self.base < len(self.buf):
            return
        n = min(keep_from, self.filled) - self.base
        if n <= 0:
            raise AssertionError("row buffer too small for the rewind window")
        self.out[self.base : self.base + n] = self.buf[:n]
        rest = self.filled - self.base - n
        self.buf[:rest] = self.buf[n : n + rest]
        self.base += n

    def finish(self):
        if not self.direct and self.filled > self.base:
            self.out[self.base : self.filled] = self.buf[: self.filled - self.base]
            self.base = self.filled


# --------------------------------------------------------------------------- the tracker


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
    home = np.asarray(point_positions, dtype=np.float32)
    if home.ndim != 2 or home.shape[1] != 2 or len(home) == 0:
        raise ROIError(f"point_positions must be a non-empty (N, 2) array, got shape {home.shape}")
    N = len(home)
    T = int(n_frames)
    start = int(start)
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
    if neighbors is None:
        neighbors, d0 = build_mesh(home, params.mesh_n_neighbors)
    else:
        neighbors = np.asarray(neighbors, dtype=np.int64)
        if neighbors.ndim != 2 or len(neighbors) != N or neighbors.min() < 0 or neighbors.max() >= N:
            raise ConfigError(f"neighbors must be (N={N}, k) indices into the points, got {neighbors.shape}")
        d0 = mesh_offsets(home, neighbors)

    it = iter(chunks)
    pending = None
    if mask is None:  # whole frame: learn the size from the first chunk
        pending = next(it, None)
        if pending is None:
            raise VideoError(f"{label}: no frames")
        mask = np.ones(pending[1].shape[1:3], dtype=bool)
    prep = FramePreprocessor(
        mask,
        params.clahe_clip_limit,
        params.clahe_tile_grid_size,
        crop=params.crop,
        win_size=params.win_size,
        max_level=params.max_level,
    )
    ox, oy = prep.offset
    offset = np.array([ox, oy], dtype=np.float32)
    H, W = prep.frame_shape
    if np.any(home[:, 0] < 0) or np.any(home[:, 1] < 0) or np.any(home[:, 0] > W - 1) or np.any(home[:, 1] > H - 1):
        raise ROIError(f"{label}: seed points lie outside the {W}x{H} frame; ROIs and video do not match")
    logger.info("%s: %d points, %d frames from %d, %s", label, N, T, start, prep)

    def source():
        if pending is not None:
            yield pending
        yield from it

    def prepped():
        for s, fr in source():
            e = s + len(fr)
            if e <= start:
                continue
            if s < start:
                fr, s = fr[start - s :], start
            # small pieces keep the rewind buffer (and its memory) small
            for a in range(0, len(fr), _PIECE):
                yield s + a, prep.process_chunk(fr[a : a + _PIECE])

    frames_iter = run_ahead(prepped(), maxsize=1, name="track-preprocess") if preprocess_ahead else prepped()
    B, A = params.frames_halted_before, params.frames_halted_after
    cache = _FrameCache(frames_iter, first=start, lookback=B + 2)

    backend = select_tracking_backend(device) if device != "cpu" else "cpu"
    lk = _CudaLK(params) if backend == "cuda" else _CpuLK(params)

    if out is None:
        out = np.empty((T, N, 2), dtype=np.float32)
    if start > 0:  # fix: rows before the start are the home positions, not zeros
        for s in range(0, start, 4096):
            e = min(s + 4096, start)
            out[s:e] = np.broadcast_to(home, (e - s, N, 2))
    store = _RowStore(out, start, N, block=max(1024, 2 * (B + 2 + _PIECE)))

    rho, lam = np.float32(params.mesh_rigidity), np.float32(params.relaxation)
    theta2 = float(params.threshold_displacement) ** 2
    relax_on_freeze = params.relaxation_during_freeze_frames
    max_rewinds = params.max_rewinds
    violations: dict[int, np.ndarray] = {}
    no_viol = np.zeros(N, dtype=bool)
    vmask = no_viol

    def step_forces(q):
        if rho != 0:
            q = apply_mesh(q, neighbors, d0, rho)
        if lam != 0:
            q = apply_relaxation(q, home, lam)
        return q

    t = start
    f_prev = cache.get(start)
    p_prev = home.copy()
    n_rewinds = 0
    capped = False
    processed = 0
    t0 = time.perf_counter()
    last_log_t, last_log_n = t0, 0
    try:
        while t < T:
            f_t = cache.get(t)
            freeze = frames_freeze is not None and frames_freeze[t]
            if freeze and not relax_on_freeze:
                q = p_prev.copy()
            else:
                if freeze:
                    q = p_prev.copy()
                else:
                    q = lk(f_prev, f_t, p_prev - offset) + offset if prep.cropped else lk(f_prev, f_t, p_prev)
                if vmask is not no_viol:
                    q[vmask] = p_prev[vmask]
                q = step_forces(q)
            store.flush(t, keep_from=min(cache.oldest(), t - B - 1))
            store.set(t, q)
            processed += 1

            d = q - home
            flagged = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) > theta2
            event = bool(flagged.any())
            if event:
                grown = grow_violations(flagged, neighbors)
                for r in range(max(t - B, start), min(t + A, T)):  # never before the start
                    row = violations.get(r)
                    if row is None:
                        violations[r] = grown.copy()
                    else:
                        row |= grown
            vmask = violations.get(t, no_viol)
            if not vmask.any():
                vmask = no_viol

            if event and (max_rewinds is None or n_rewinds < max_rewinds):
                n_rewinds += 1
                t_new = max(t - B, start)
                if max(t_new - 1, start) < cache.oldest():
                    # only after cascading rewinds: the frames before are no longer buffered
                    t_new = cache.oldest() + 1
                    logger.warning("%s: rewind limited to frame %d (older frames are no longer buffered)", label, t_new)
                if params.legacy_rewind:
                    p_prev = store.get(t_new)
                    f_prev = cache.get(max(t_new - 1, start))
                elif t_new > start:
                    p_prev = store.get(t_new - 1)
                    f_prev = cache.get(t_new - 1)
                else:
                    p_prev = home.copy()
                    f_prev = cache.get(start)
                logger.debug("%s: violation at frame %d (%d points); rewind to %d", label, t, int(flagged.sum()), t_new)
                t = t_new
                continue
            if event and not capped:
                capped = True
                logger.warning(
                    "%s: max_rewinds=%s reached at frame %d; further violations hold points without rewinding",
                    label,
                    max_rewinds,
                    t,
                )
            f_prev, p_prev = f_t, q
            t += 1
            if processed - last_log_n >= params.progress_every:
                now = time.perf_counter()
                fps = (processed - last_log_n) / max(now - last_log_t, 1e-9)
                eta = (T - t) / fps if fps > 0 else float("inf")
                logger.info("%s: frame %d/%d, %.1f frames/s, ETA %.0f s, %d rewinds", label, t, T, fps, eta, n_rewinds)
                last_log_t, last_log_n = now, processed
        store.finish()
    finally:
        close = getattr(frames_iter, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t0
    res = TrackingResult(
        points=out,
        violations=violations,
        n_frames=T,
        n_points=N,
        start=start,
        n_rewinds=n_rewinds,
        n_frames_processed=processed,
        seconds=seconds,
        rewinds_capped=capped,
    )
    logger.info(
        "%s: done, %d frames (%d processed incl. replays) in %.1f s (%.1f frames/s), "
        "%d rewinds, violation fraction %.4f",
        label,
        T - start,
        processed,
        seconds,
        processed / max(seconds, 1e-9),
        n_rewinds,
        res.violation_fraction,
    )
    return res
