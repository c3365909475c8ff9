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
:func:`track_session` runs it over a session's videos with
:func:`facerhythm_core.video.iter_frame_chunks`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .clahe import Clahe
from .errors import ConfigError, ROIError, VideoError
from .tables import editor_lines, read_text
from .video import run_ahead, to_gray

logger = logging.getLogger(__name__)

__all__ = [
    "TrackingParams", "TrackingResult", "SessionTracking", "FramePreprocessor",
    "build_mesh", "mesh_offsets", "apply_mesh", "apply_relaxation", "grow_violations",
    "preprocess_frame", "select_tracking_backend", "track_stream", "track_session",
    "load_frames_freeze", "violations_to_coo", "write_tracking_h5",
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
        if len(self.criteria) != 3 or int(self.criteria[0]) not in (1, 2, 3) or int(self.criteria[1]) < 1 \
                or not float(self.criteria[2]) >= 0:
            bad("criteria", "must be [type, max_iter, eps] with type 1 (COUNT), 2 (EPS) or 3 "
                f"(both), max_iter >= 1 and eps >= 0; got {self.criteria!r}")
        if self.clahe_clip_limit is not None:
            if not self.clahe_clip_limit > 0:
                bad("clahe.clip_limit", f"must be > 0 (use clahe: null to turn CLAHE off), got {self.clahe_clip_limit!r}")
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
        object.__setattr__(self, "clahe_tile_grid_size",
                           (int(self.clahe_tile_grid_size[0]), int(self.clahe_tile_grid_size[1])))
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
                    raise ConfigError(f"tracking.clahe: unknown keys {sorted(extra)}; "
                                      "allowed: clip_limit, tile_grid_size")
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
        return replace(cls(mesh_rigidity=0.005, mesh_n_neighbors=10, relaxation=0.5,
                           win_size=(15, 15), max_level=2, criteria=(3, 10, 0.03),
                           threshold_displacement=25.0, frames_halted_before=30,
                           frames_halted_after=30, crop=False, max_rewinds=None,
                           legacy_rewind=True), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lk_criteria(self) -> tuple[int, int, float]:
        return self.criteria


# --------------------------------------------------------------------------- mesh

def build_mesh(point_positions: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed k-NN neighbour sets (self included) and the initial mesh offsets.

    Parameters
    ----------
    point_positions : ndarray, shape (N, 2)
        Home positions (x, y) in pixels.
    n_neighbors : int
        k, clipped to N. The point itself is always member 0 of its own set, as in the
        reference (k = 8 means the point plus 7 others).

    Returns
    -------
    neighbors : ndarray, int64, shape (N, k)
        Sorted by distance; ties (common on a grid) break by the lower point index, so
        the sets do not depend on a sort's stability (reference bug §13.9). Built with a
        KD-tree, never an N x N distance matrix.
    d0 : ndarray, float32, shape (N, 2)
        ``mesh_offsets(point_positions, neighbors)``.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(point_positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ROIError(f"point_positions must be a non-empty (N, 2) array, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ROIError("point_positions contain NaN or inf")
    n = len(p)
    k = int(min(max(1, n_neighbors), n))
    tree = cKDTree(p)
    dk, _ = tree.query(p, k=k)
    dk = dk.reshape(n, k)[:, -1]
    # every point tied with the k-th distance is a candidate; pick by (distance, index)
    cand = tree.query_ball_point(p, r=dk * (1 + 1e-9) + 1e-9)
    neighbors = np.empty((n, k), dtype=np.int64)
    for i, c in enumerate(cand):
        c = np.asarray(c, dtype=np.int64)
        d = np.round(np.hypot(*(p[c] - p[i]).T), 6)
        order = np.lexsort((c, c != i, d))  # distance, then self first, then index
        neighbors[i] = c[order[:k]]
    d0 = mesh_offsets(p.astype(np.float32), neighbors)
    return neighbors, d0


def mesh_offsets(points: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """D(P)_i = P_i - mean of P over i's neighbour set (self included).

    Parameters
    ----------
    points : ndarray, float32, shape (N, 2)
    neighbors : ndarray, int, shape (N, k)

    Returns
    -------
    ndarray, float32, shape (N, 2)
    """
    points = np.asarray(points, dtype=np.float32)
    neighbors = np.asarray(neighbors)
    # k row gathers summed in order: the same float32 sums as
    # points[neighbors].mean(axis=1), at a tenth of the cost (the tracker runs it per frame)
    m = points.take(neighbors[:, 0], axis=0)
    for j in range(1, neighbors.shape[1]):
        m += points.take(neighbors[:, j], axis=0)
    m /= np.float32(neighbors.shape[1])
    return points - m


def apply_mesh(q: np.ndarray, neighbors: np.ndarray, d0: np.ndarray, rigidity: float) -> np.ndarray:
    """One mesh step: q - rho * (D(q) - d0), float32, shape (N, 2)."""
    q = np.asarray(q, dtype=np.float32)
    if rigidity == 0:
        return q.copy()
    return q - np.float32(rigidity) * (mesh_offsets(q, neighbors) - d0)


def apply_relaxation(q: np.ndarray, home: np.ndarray, relaxation: float) -> np.ndarray:
    """One relaxation step toward home: q - lambda * (q - home), float32, shape (N, 2)."""
    q = np.asarray(q, dtype=np.float32)
    return q - np.float32(relaxation) * (q - home)


def grow_violations(flags: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Flag every member of the neighbour sets of flagged points as well.

    Parameters
    ----------
    flags : ndarray, bool, shape (N,)
    neighbors : ndarray, int, shape (N, k)

    Returns
    -------
    ndarray, bool, shape (N,)
    """
    out = np.array(flags, dtype=bool, copy=True)
    out[neighbors[flags].ravel()] = True
    return out


# --------------------------------------------------------------------------- preprocessing

def _clahe_tiles(height: int, width: int, gx: int, gy: int) -> tuple[int, int]:
    """Tile size (tw, th) in pixels that OpenCV's CLAHE uses on an (height, width) image.

    When either side is not divisible by its tile count, OpenCV pads the bottom by
    ``gy - height % gy`` rows and the right by ``gx - width % gx`` columns (reflect-101),
    a whole extra tile's worth on a side that was divisible, and splits the padded image
    evenly.
    """
    if width % gx == 0 and height % gy == 0:
        return width // gx, height // gy
    return (width + gx - width % gx) // gx, (height + gy - height % gy) // gy


def preprocess_frame(frame: np.ndarray, mask: np.ndarray | None,
                     clahe_clip_limit: float | None = 40.0,
                     clahe_tile_grid_size: tuple[int, int] = (150, 150)) -> np.ndarray:
    """The reference's per-frame preprocessing on a full frame (the slow, exact path).

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W) gray or (H, W, C) colour
        Colour is reduced by the equal-weight channel mean, truncated.
    mask : ndarray, bool, shape (H, W), or None
        Pixels outside are set to 0 before CLAHE (as the reference).
    clahe_clip_limit, clahe_tile_grid_size
        CLAHE settings; ``clahe_clip_limit=None`` skips CLAHE.

    Returns
    -------
    ndarray, uint8, shape (H, W)
    """
    import cv2

    f = np.asarray(frame)
    if f.ndim == 3:
        f = to_gray(f)
    if f.dtype != np.uint8:
        raise VideoError(f"frames must be uint8, got {f.dtype}")
    if mask is not None:
        f = f * np.asarray(mask, dtype=np.uint8)
    if clahe_clip_limit is None:
        return np.ascontiguousarray(f)
    clahe = cv2.createCLAHE(clipLimit=float(clahe_clip_limit), tileGridSize=tuple(clahe_tile_grid_size))
    return clahe.apply(np.ascontiguousarray(f))


class FramePreprocessor:
    """Mask + CLAHE for a stream of gray frames, optionally on a crop of each frame.

    With ``crop=True`` only the tracking mask's bounding box plus a margin is processed.
    The crop is chosen so that the result equals the full-frame preprocessing inside it:

    - its origin is a multiple of the full frame's CLAHE tile size (so the CLAHE tiles
      are the same pixels and the same tile *size* in pixels as on the full frame) and
      of ``2**max_level`` (so the LK pyramid samples the same pixels);
    - CLAHE runs on whole tiles, the bottom/right padding reproduced as OpenCV pads the
      full frame;
    - the margin holds two tiles beyond the mask (CLAHE output there is the constant that
      fully masked tiles map to) plus the LK window at the coarsest level, so LK windows
      that cross the crop's edge read the same constant the full frame holds there.

    The only differences left are float rounding in OpenCV's tile-interpolation weights
    (rarely +-1 grey level) and in the LK coordinates; ``docs/tracking.md`` gives the
    measured effect.

    Parameters
    ----------
    mask : ndarray, bool, shape (H, W)
        Tracking mask.
    clahe_clip_limit : float or None
    clahe_tile_grid_size : (int, int)
        Tile count (x, y) *of the full frame*.
    crop : bool
    win_size : (int, int)
    max_level : int
        LK settings, used for the margin and the alignment.
    clahe_engine : {"auto", "numba", "opencv"}
        See :class:`facerhythm_core.clahe.Clahe` (same output either way).

    Attributes
    ----------
    offset : (int, int)
        (x0, y0) of the processed region in frame pixels; add it to positions found in
        a processed image to get frame coordinates.
    shape : (int, int)
        (h, w) of the processed images.
    """

    def __init__(self, mask: np.ndarray, clahe_clip_limit: float | None = 40.0,
                 clahe_tile_grid_size: tuple[int, int] = (150, 150), crop: bool = True,
                 win_size: tuple[int, int] = (20, 20), max_level: int = 2,
                 clahe_engine: str = "auto"):
        import cv2

        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ROIError(f"tracking mask must be 2-D (H, W), got shape {mask.shape}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ROIError("tracking mask is empty (no pixel selected); check the ROIs")
        self.frame_shape = (int(mask.shape[0]), int(mask.shape[1]))
        H, W = self.frame_shape
        self.use_clahe = clahe_clip_limit is not None
        gx, gy = (int(v) for v in clahe_tile_grid_size)
        if self.use_clahe:
            tw, th = _clahe_tiles(H, W, gx, gy)
            Wp, Hp = tw * gx, th * gy  # the padded size OpenCV works on
            # OpenCV builds a LUT for every tile of the padded image, but the frame's pixels
            # interpolate only between tiles up to floor((W-1)/tw + 1/2); the tiles beyond
            # (up to a whole grid's worth when W % gx is large) are never read
            Wu = min(Wp, (math.floor((W - 1) / tw + 0.5) + 1) * tw)
            Hu = min(Hp, (math.floor((H - 1) / th + 0.5) + 1) * th)
        else:
            tw = th = 1
            Wp, Hp = Wu, Hu = W, H
        step = 2 ** int(max_level)
        ax, ay = math.lcm(tw, step), math.lcm(th, step)
        x0 = y0 = 0
        x1p, y1p = Wu, Hu
        rx0, ry0, rx1p, ry1p = 0, 0, Wu, Hu  # the region CLAHE is computed on
        if crop:
            ys, xs = np.nonzero(mask)
            lk_margin = (max(win_size) // 2 + 3) * step
            mx = lk_margin + 2 * tw + 2
            my = lk_margin + 2 * th + 2
            x0 = max(0, (int(xs.min()) - mx) // ax * ax)
            y0 = max(0, (int(ys.min()) - my) // ay * ay)
            x1p = min(Wu, -(-(int(xs.max()) + 1 + mx) // tw) * tw)
            y1p = min(Hu, -(-(int(ys.max()) + 1 + my) // th) * th)
            # CLAHE itself only where a tile within one tile holds mask pixels; farther out
            # every fully masked tile maps 0 to the same constant
            rx0 = max(0, (int(xs.min()) - 2 * tw) // tw * tw)
            ry0 = max(0, (int(ys.min()) - 2 * th) // th * th)
            rx1p = min(Wu, -(-(int(xs.max()) + 1 + 2 * tw) // tw) * tw)
            ry1p = min(Hu, -(-(int(ys.max()) + 1 + 2 * th) // th) * th)
            # OpenCV's bottom/right padding reflects the last rows/columns: if they hold mask
            # pixels, the padded tiles do too
            if int(xs.max()) >= W - 1 - (Wu - W) - 2 * tw:
                x1p = rx1p = Wu
            if int(ys.max()) >= H - 1 - (Hu - H) - 2 * th:
                y1p = ry1p = Hu
            region_thin = (min(rx1p, W) - rx0 <= rx1p - min(rx1p, W)
                           or min(ry1p, H) - ry0 <= ry1p - min(ry1p, H))
            too_thin = region_thin or (min(x1p, W) - x0 <= x1p - min(x1p, W)
                                       or min(y1p, H) - y0 <= y1p - min(y1p, H))
            if too_thin or (x1p - x0) * (y1p - y0) > 0.9 * Wu * Hu:  # not worth it / cannot pad
                x0, y0, x1p, y1p = 0, 0, Wu, Hu
            # CLAHE's cost grows with its tile count, so it is restricted to the region even
            # when the LK crop (which needs a wide margin) is not worth it
            if region_thin or (rx1p - rx0) * (ry1p - ry0) > 0.9 * Wu * Hu:
                rx0, ry0, rx1p, ry1p = x0, y0, x1p, y1p
        self.cropped = (x0, y0, x1p, y1p) != (0, 0, Wu, Hu)
        self.offset = (x0, y0)
        x1, y1 = min(x1p, W), min(y1p, H)
        self._src = (slice(y0, y1), slice(x0, x1))
        self.shape = (y1 - y0, x1 - x0)
        self._mask = np.ascontiguousarray(mask[self._src], dtype=np.uint8)
        self._clahe = None
        self._fill = 0
        if self.use_clahe:
            rx1, ry1 = min(rx1p, W), min(ry1p, H)
            self._rsrc = (slice(ry0, ry1), slice(rx0, rx1))  # in frame pixels
            self._rdst = (slice(ry0 - y0, ry1 - y0), slice(rx0 - x0, rx1 - x0))  # in the crop
            self._rmask = np.ascontiguousarray(mask[self._rsrc], dtype=np.uint8)
            self._pad = (ry1p - ry1, rx1p - rx1)  # bottom/right padding OpenCV would add
            self._partial = (rx0, ry0, rx1, ry1) != (x0, y0, x1, y1)
            # our own tile grid (aligned with the full frame's) unless OpenCV sees the whole frame
            self._manual = self.cropped or self._partial or (Wu, Hu) != (Wp, Hp)
            if self._manual:
                # whole tiles of the full frame's tile size
                grid = ((rx1p - rx0) // tw, (ry1p - ry0) // th)
                # what a fully masked tile maps to (same tile size, so same clip limit)
                self._fill = int(cv2.createCLAHE(clipLimit=float(clahe_clip_limit), tileGridSize=(1, 1))
                                 .apply(np.zeros((th, tw), np.uint8))[0, 0])
            else:
                grid = (gx, gy)
            # equal to cv2.createCLAHE(...).apply, about 2.5x faster on the tracker's tiny tiles
            self._clahe = Clahe(float(clahe_clip_limit), grid, engine=clahe_engine)
            self._pad_needed = self._manual and (self._pad[0] > 0 or self._pad[1] > 0)
        self.clahe_region = None if self._clahe is None else (rx0, ry0, min(rx1p, W), min(ry1p, H))

    def __repr__(self):
        engine = "" if self._clahe is None else f", clahe_engine={self._clahe.engine}"
        return (f"FramePreprocessor(frame={self.frame_shape}, offset={self.offset}, "
                f"shape={self.shape}, clahe_region={self.clahe_region}{engine})")

    def process_chunk(self, frames: np.ndarray) -> np.ndarray:
        """Preprocess frames -> (n, h, w) uint8.

        ``frames`` is (n, H, W) gray or (n, H, W, C) colour uint8; colour is cropped
        first and then reduced to gray as the reference does (equal-weight mean,
        truncated), which is the same per pixel and much cheaper than graying full frames.
        """
        import cv2

        frames = np.asarray(frames)
        if frames.ndim not in (3, 4) or frames.shape[1:3] != self.frame_shape:
            raise VideoError(f"frames have shape {frames.shape[1:]} but the tracking mask is "
                             f"{self.frame_shape}; ROIs and video must have the same size")
        if frames.dtype != np.uint8:
            raise VideoError(f"frames must be uint8, got {frames.dtype}")
        if self._clahe is None:
            crop = frames[:, self._src[0], self._src[1]]
            if crop.ndim == 4:
                crop = to_gray(crop)
            return np.multiply(crop, self._mask)
        src = frames[:, self._rsrc[0], self._rsrc[1]]
        if src.ndim == 4:
            masked = to_gray(src)
            np.multiply(masked, self._rmask, out=masked)
        else:
            masked = np.multiply(src, self._rmask)
        if self._partial:
            out = np.full((len(frames),) + self.shape, self._fill, dtype=np.uint8)
        else:
            out = np.empty((len(frames),) + self.shape, dtype=np.uint8)
        pb, pr = self._pad
        h, w = masked.shape[1:]
        for i in range(len(masked)):
            if self._pad_needed:
                ext = cv2.copyMakeBorder(masked[i], 0, pb, 0, pr, cv2.BORDER_REFLECT_101)
                out[i][self._rdst] = self._clahe.apply(ext)[:h, :w]
            elif self._partial:
                out[i][self._rdst] = self._clahe.apply(masked[i])
            else:
                self._clahe.apply(masked[i], dst=out[i])
        return out

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Preprocess one gray frame (H, W) uint8 -> (h, w) uint8."""
        return self.process_chunk(np.asarray(frame)[None])[0]


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
        logger.warning("tracking.device=%s requested but %s", device, msg[len("tracking backend: "):])
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
        q, _status, _err = self.lk.calc(self._gpu(prev), self._gpu(nxt),
                                        self._gpu(pts.reshape(1, -1, 2).astype(np.float32)), None)
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
    return {"row": row, "col": col, "data": np.ones(len(row), dtype=bool),
            "shape": np.asarray(shape, dtype=np.int64)}


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
                raise VideoError(f"the frame stream ended at frame {self._next} but frame {i} "
                                 "was expected; the video is shorter than its reported length") from None
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
        self.out[self.base:self.base + n] = self.buf[:n]
        rest = self.filled - self.base - n
        self.buf[:rest] = self.buf[n:n + rest]
        self.base += n

    def finish(self):
        if not self.direct and self.filled > self.base:
            self.out[self.base:self.filled] = self.buf[:self.filled - self.base]
            self.base = self.filled


# --------------------------------------------------------------------------- the tracker

def track_stream(chunks: Iterable[tuple[int, np.ndarray]], point_positions: np.ndarray,
                 mask: np.ndarray | None, params: TrackingParams | None = None, *,
                 n_frames: int, start: int = 0, frames_freeze: np.ndarray | None = None,
                 neighbors: np.ndarray | None = None, out=None, device: str = "cpu",
                 label: str = "stream", preprocess_ahead: bool = True) -> TrackingResult:
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
        raise ConfigError(f"tracking.idx_start={start} is outside {label} (frames 0..{T - 1}); "
                          "choose a start inside the video")
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
    prep = FramePreprocessor(mask, params.clahe_clip_limit, params.clahe_tile_grid_size,
                             crop=params.crop, win_size=params.win_size, max_level=params.max_level)
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
                fr, s = fr[start - s:], start
            # small pieces keep the rewind buffer (and its memory) small
            for a in range(0, len(fr), _PIECE):
                yield s + a, prep.process_chunk(fr[a:a + _PIECE])

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
                    logger.warning("%s: rewind limited to frame %d (older frames are no longer "
                                   "buffered)", label, t_new)
                if params.legacy_rewind:
                    p_prev = store.get(t_new)
                    f_prev = cache.get(max(t_new - 1, start))
                elif t_new > start:
                    p_prev = store.get(t_new - 1)
                    f_prev = cache.get(t_new - 1)
                else:
                    p_prev = home.copy()
                    f_prev = cache.get(start)
                logger.debug("%s: violation at frame %d (%d points); rewind to %d", label, t,
                             int(flagged.sum()), t_new)
                t = t_new
                continue
            if event and not capped:
                capped = True
                logger.warning("%s: max_rewinds=%s reached at frame %d; further violations hold "
                               "points without rewinding", label, max_rewinds, t)
            f_prev, p_prev = f_t, q
            t += 1
            if processed - last_log_n >= params.progress_every:
                now = time.perf_counter()
                fps = (processed - last_log_n) / max(now - last_log_t, 1e-9)
                eta = (T - t) / fps if fps > 0 else float("inf")
                logger.info("%s: frame %d/%d, %.1f frames/s, ETA %.0f s, %d rewinds",
                            label, t, T, fps, eta, n_rewinds)
                last_log_t, last_log_n = now, processed
        store.finish()
    finally:
        close = getattr(frames_iter, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t0
    res = TrackingResult(points=out, violations=violations, n_frames=T, n_points=N, start=start,
                         n_rewinds=n_rewinds, n_frames_processed=processed, seconds=seconds,
                         rewinds_capped=capped)
    logger.info("%s: done, %d frames (%d processed incl. replays) in %.1f s (%.1f frames/s), "
                "%d rewinds, violation fraction %.4f", label, T - start, processed, seconds,
                processed / max(seconds, 1e-9), n_rewinds, res.violation_fraction)
    return res


# --------------------------------------------------------------------------- sessions

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
        return np.array([self.results[k].violation_fraction for k in sorted(self.results, key=int)],
                        dtype=np.float64)


def _resolve_starts(idx_start, num_frames: Sequence[int], contiguous: bool) -> list[int]:
    """Start frame per stream (one stream when contiguous)."""
    if contiguous:
        if np.ndim(idx_start) != 0:
            raise ConfigError("tracking.idx_start must be a single integer when tracking is "
                              f"contiguous (one stream over all videos), got {idx_start!r}")
        s = int(idx_start)
        if not 0 <= s < sum(num_frames):
            raise ConfigError(f"tracking.idx_start={s} is outside the session's {sum(num_frames)} frames")
        return [s]
    if np.ndim(idx_start) == 0:
        starts = [int(idx_start)] * len(num_frames)
    else:  # fix: the reference crashes on a list (int(list))
        starts = [int(v) for v in idx_start]
        if len(starts) != len(num_frames):
            raise ConfigError(f"tracking.idx_start has {len(starts)} values but the session has "
                              f"{len(num_frames)} videos; give one start per video or a single integer")
    for i, (s, n) in enumerate(zip(starts, num_frames)):
        if not 0 <= s < n:
            raise ConfigError(f"tracking.idx_start={s} is outside video {i} ({n} frames)")
    return starts


def track_session(video_paths: Sequence[str | Path], point_positions: np.ndarray,
                  mask: np.ndarray | None, params: TrackingParams | None = None, *,
                  num_frames: Sequence[int] | None = None, contiguous: bool = False,
                  idx_start: int | Sequence[int] = 0, frames_freeze: np.ndarray | None = None,
                  chunk_size: int = 128, prefetch: int = 2, decode_device: str = "cpu",
                  device: str = "cpu", neighbors: np.ndarray | None = None,
                  out_factory: Callable[[str, tuple], object] | None = None) -> SessionTracking:
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
        Reader settings (:func:`facerhythm_core.video.iter_frame_chunks`).
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
    from .video import iter_frame_chunks, probe_video

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
    if frames_freeze is not None:
        frames_freeze = np.asarray(frames_freeze, dtype=bool)
        if frames_freeze.shape != (total,):
            raise ConfigError(f"frames_freeze has {frames_freeze.size} entries but the session has "
                              f"{total} frames ({' + '.join(map(str, num_frames))}); give one value per frame")
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
    rkw = dict(chunk_size=max(1, min(int(chunk_size), 32)), gray=False, device=decode_device,
               prefetch=prefetch, decode_threads=1)

    def make_out(key, T):
        return out_factory(key, (T, len(home), 2)) if out_factory is not None else None

    results = {}
    if contiguous:
        start = starts[0]

        def chunks():
            off = 0
            for p, n in zip(paths, num_frames):
                if off + n > start:
                    for s, fr in iter_frame_chunks(p, start=max(0, start - off), n_frames=n, **rkw):
                        yield off + s, fr
                off += n

        results["0"] = track_stream(chunks(), home, mask, params, n_frames=total, start=start,
                                    frames_freeze=frames_freeze, neighbors=neighbors,
                                    out=make_out("0", total), device=device,
                                    label=f"contiguous ({len(paths)} videos)")
    else:
        off = 0
        for i, (p, n, s) in enumerate(zip(paths, num_frames, starts)):
            ff = None if frames_freeze is None else frames_freeze[off:off + n]
            results[str(i)] = track_stream(iter_frame_chunks(p, start=s, n_frames=n, **rkw), home, mask, params,
                                           n_frames=n, start=s, frames_freeze=ff, neighbors=neighbors,
                                           out=make_out(str(i), n), device=device,
                                           label=f"video {i} ({Path(p).name})")
            off += n
    if mask is None:
        H, W = probe_video(paths[0]).height, probe_video(paths[0]).width
        mask = np.ones((H, W), dtype=bool)
    return SessionTracking(results=results, point_positions=home, neighbors=neighbors, mesh_d0=d0,
                           mask=np.asarray(mask, dtype=bool), contiguous=bool(contiguous),
                           video_paths=paths, num_frames=num_frames, params=params)


def load_frames_freeze(path: str | Path, n_frames_total: int) -> np.ndarray:
    """Read a frames_freeze file into a bool array over the session's frames.

    Parameters
    ----------
    path : path
        ``.npy``: a 1-D bool array (or integers 0/1) of length ``n_frames_total``.
        Anything else is read as text: one inclusive ``start end`` frame range per line
        (a single number is one frame); ``#`` starts a comment; blank lines are ignored.
        Indices are global over the session's videos, in order, starting at 0.
    n_frames_total : int

    Returns
    -------
    ndarray, bool, shape (n_frames_total,)
    """
    path = Path(path)
    n = int(n_frames_total)
    if not path.exists():
        raise ConfigError(f"frames_freeze file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ConfigError(f"frames_freeze {path}: cannot read as a .npy array ({exc})") from exc
        if a.ndim != 1:
            raise ConfigError(f"frames_freeze {path}: must be 1-D, has shape {a.shape}")
        if a.dtype != bool:
            if not np.issubdtype(a.dtype, np.integer) or not np.isin(a, (0, 1)).all():
                raise ConfigError(f"frames_freeze {path}: must be bool or 0/1 integers, got {a.dtype}")
            a = a.astype(bool)
        if len(a) != n:
            raise ConfigError(f"frames_freeze {path} has {len(a)} entries but the session has {n} "
                              "frames; give one value per frame of all the session's videos")
        return a
    out = np.zeros(n, dtype=bool)
    for lineno, line in enumerate(editor_lines(read_text(path, "frames_freeze file")), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            vals = [int(v) for v in parts]
        except ValueError:
            raise ConfigError(f"frames_freeze {path}:{lineno}: expected 'start end' integers, got {line!r}") from None
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2:
            raise ConfigError(f"frames_freeze {path}:{lineno}: expected 'start end', got {line!r}")
        a, b = vals
        if not 0 <= a <= b < n:
            raise ConfigError(f"frames_freeze {path}:{lineno}: range {a}-{b} must satisfy "
                              f"0 <= start <= end < {n} (the session's frame count)")
        out[a:b + 1] = True
    return out


def write_tracking_h5(f, session: SessionTracking, frame_rate: float,
                      clocks: Mapping[str, Mapping] | None = None) -> None:
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
