"""Pure array helpers of the figures: which points lie in each ROI, a map from pixels
to their nearest point, example points spread over the range of motion, binning long
series for drawing, and video start times."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

#: most columns/samples drawn per trace or spectrogram; longer series are binned
MAX_DRAWN = 4000


def points_in_masks(positions: np.ndarray, masks: Mapping[str, np.ndarray]) -> dict:
    """Which points fall inside each mask.

    Parameters
    ----------
    positions : ndarray, shape (N, 2)
        (x, y) pixel positions.
    masks : mapping of str -> ndarray, bool, shape (H, W)

    Returns
    -------
    dict of str -> ndarray, bool, shape (N,)
        Points outside the frame are in no mask.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {pos.shape}")
    out = {}
    for name, m in masks.items():
        m = np.asarray(m, dtype=bool)
        h, w = m.shape
        xi = np.round(pos[:, 0]).astype(np.int64)
        yi = np.round(pos[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        sel = np.zeros(len(pos), bool)
        sel[inside] = m[yi[inside], xi[inside]]
        out[name] = sel
    return out


def typical_spacing(positions: np.ndarray) -> float:
    """Median distance from each point to its nearest neighbour (pixels); 1 for < 2 points."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        return 1.0
    d, _ = cKDTree(pos).query(pos, k=2)
    return float(max(np.median(d[:, 1]), 1.0))


def point_index_map(positions: np.ndarray, shape: tuple[int, int], radius: float | None = None) -> np.ndarray:
    """Nearest-point index for every pixel within ``radius`` of a point (else -1).

    Used to paint per-point values as tiles, so a factor reads as a map of the face.

    Parameters
    ----------
    positions : ndarray, shape (N, 2)
        (x, y) pixel positions.
    shape : (H, W)
    radius : float, optional
        Largest distance (pixels) painted around a point; default 0.75 x the typical
        point spacing, which makes grid tiles touch.

    Returns
    -------
    ndarray, int64, shape (H, W)
    """
    from scipy.spatial import cKDTree

    h, w = int(shape[0]), int(shape[1])
    out = np.full((h, w), -1, np.int64)
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) == 0:
        return out
    r = 0.75 * typical_spacing(pos) if radius is None else float(radius)
    x0 = max(int(math.floor(pos[:, 0].min() - r)), 0)
    x1 = min(int(math.ceil(pos[:, 0].max() + r)) + 1, w)
    y0 = max(int(math.floor(pos[:, 1].min() - r)), 0)
    y1 = min(int(math.ceil(pos[:, 1].max() + r)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d, idx = cKDTree(pos).query(np.column_stack([xx.ravel(), yy.ravel()]), distance_upper_bound=r)
    idx[~np.isfinite(d)] = -1
    out[y0:y1, x0:x1] = idx.reshape(yy.shape)
    return out


def choose_example_points(motion: np.ndarray, k: int = 4, valid: np.ndarray | None = None) -> np.ndarray:
    """Pick ``k`` points that span the range of motion: the most mobile, then quantiles.

    Parameters
    ----------
    motion : ndarray, shape (N,)
        A per-point motion size, e.g. the std of the displacement in pixels.
    k : int
    valid : ndarray, bool, shape (N,), optional
        Points allowed (e.g. never violating); all if None or if none is valid.

    Returns
    -------
    ndarray, int64, shape (min(k, N),)
        Point indices, most mobile first, no repeats.
    """
    motion = np.asarray(motion, dtype=np.float64)
    n = len(motion)
    if n == 0 or k < 1:
        return np.zeros(0, np.int64)
    cand = np.arange(n) if valid is None or not np.any(valid) else np.flatnonzero(valid)
    order = cand[np.argsort(-np.nan_to_num(motion[cand], nan=-np.inf), kind="stable")]
    k = min(k, len(order))
    # evenly spaced ranks: the most mobile point, then down to the least mobile
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[picks].astype(np.int64)


def bin_series(
    t: np.ndarray, y: np.ndarray, max_points: int = MAX_DRAWN, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a long series to at most ``max_points`` bins along axis 0.

    ``how`` = "mean", "max" (keeps rare events visible) or "minmax" (an envelope:
    two samples per bin, the min and the max, so the drawn line keeps its extent).
    """
    t = np.asarray(t)
    y = np.asarray(y)
    n = len(t)
    if n <= max_points:
        return t, y
    per = 2 if how == "minmax" else 1
    step = int(math.ceil(n * per / max_points))
    m = n // step
    tb = t[: m * step].reshape(m, step).mean(axis=1)
    yb = y[: m * step].reshape((m, step) + y.shape[1:])
    if how == "mean":
        return tb, yb.mean(axis=1)
    if how == "max":
        return tb, yb.max(axis=1)
    if how == "minmax":
        lo, hi = yb.min(axis=1), yb.max(axis=1)
        return np.repeat(tb, 2), np.stack([lo, hi], axis=1).reshape((2 * m,) + y.shape[1:])
    raise ValueError(f"how must be 'mean', 'max' or 'minmax', got {how!r}")
