"""The tracker's elastic mesh: fixed k-NN neighbour sets, the mesh and relaxation forces,
and the growth of violation flags through the mesh (reference ``PointTracker``)."""

from __future__ import annotations

import numpy as np

from .errors import ROIError


#: distances per block while building the mesh (16 MB of float64; a few such arrays live at once)
_DISTANCE_BLOCK = 2**21


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
        the sets do not depend on a sort's stability (reference bug §13.9). Built from
        blocks of the N x N distances (at most :data:`_DISTANCE_BLOCK` at a time), with
        numpy only: a KD-tree gave the same sets but its import (scipy.spatial) cost
        each tracking job ~0.5 s. Time grows as N^2: 0.01 s for 353 points, 0.08 s for
        1276, 0.9 s for 5000 (the KD-tree: 0.07 s plus its import), once per session.
    d0 : ndarray, float32, shape (N, 2)
        ``mesh_offsets(point_positions, neighbors)``.
    """
    p = np.asarray(point_positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ROIError(f"point_positions must be a non-empty (N, 2) array, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ROIError("point_positions contain NaN or inf")
    n = len(p)
    k = int(min(max(1, n_neighbors), n))
    neighbors = np.empty((n, k), dtype=np.int64)
    rows = max(1, _DISTANCE_BLOCK // n)  # bounded blocks of the N x N distances
    for a in range(0, n, rows):
        d = np.hypot(p[a : a + rows, None, 0] - p[None, :, 0], p[a : a + rows, None, 1] - p[None, :, 1])
        dk = np.partition(d, k - 1, axis=1)[:, k - 1]
        for j, row in enumerate(d):
            i = a + j
            # every point tied with the k-th distance is a candidate; pick by (distance, index)
            c = np.flatnonzero(row <= dk[j] * (1 + 1e-9) + 1e-9)
            dc = np.round(row[c], 6)
            order = np.lexsort((c, c != i, dc))  # distance, then self first, then index
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
