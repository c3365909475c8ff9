"""Compiled inner loop of the TCA's HALS engine (imported on demand by :mod:`.hals`).

tensorly's ``hals_nnls`` updates one row of a factor at a time (Gauss-Seidel sweeps),
which in torch is ~6 small tensor operations per row: with rank 10, 5 sweeps and 3
modes that is ~900 dispatches per HALS iteration, which dominates the fit of the small
tensors of short trial videos. Here the same sweeps run as one compiled loop.

The update and tensorly's early stop (including its quirk of measuring a row's change
against every row of V) are as in :func:`facerhythm_core.hals.hals_nnls`; the sums
run in float64 (torch sums float32 in float32), so float32 results differ from the
torch loop by rounding only.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

try:  # numba is a dependency; without it tca falls back to the torch loop
    import numba as _numba
except Exception:  # pragma: no cover - ImportError, or llvmlite failing to load
    _numba = None

HAVE_NUMBA = _numba is not None


def _jit(fn):
    if _numba is None:  # pragma: no cover
        return None
    try:
        return _numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as exc:  # pragma: no cover - no writable cache location at all
        logger.info("numba cannot cache the HALS kernel (%s); compiling per process", exc)
        return _numba.njit(cache=False, nogil=True)(fn)


def _hals_nnls_py(UtM, UtU, V, n_iter_max, tol):  # pragma: no cover - compiled
    """In place on V (R, n): at most ``n_iter_max`` row-wise sweeps
    ``V[k] = max(0, (UtM[k] - UtU[k] @ V + d V[k]) / d)``, d = UtU[k, k] (rows with
    d == 0 skipped); stop once a sweep's change is below ``tol`` times the first's.
    Returns the number of sweeps made."""
    R, n = V.shape
    new = np.empty(n, np.float64)
    row = np.empty_like(V[0])  # V's precision
    err0 = 0.0
    sweeps = 0
    for it in range(n_iter_max):
        measure = it < n_iter_max - 1  # the last sweep's change decides nothing
        err = 0.0
        for k in range(R):
            d = np.float64(UtU[k, k])
            if d == 0.0:
                continue
            for i in range(n):
                new[i] = np.float64(UtM[k, i]) + d * np.float64(V[k, i])
            for j in range(R):
                u = np.float64(UtU[k, j])
                if u != 0.0:
                    for i in range(n):
                        new[i] -= u * np.float64(V[j, i])
            for i in range(n):
                v = new[i] / d
                # round to V's precision first: the stored row and the change measured
                # against it are the same numbers
                row[i] = v if v > 0.0 else 0.0
                new[i] = row[i]
            if measure:
                for j in range(R):
                    for i in range(n):
                        diff = np.float64(V[j, i]) - new[i]
                        err += diff * diff
            for i in range(n):
                V[k, i] = row[i]
        sweeps += 1
        if it == 0:
            err0 = err
        if measure and err < tol * err0:
            break
    return sweeps


hals_nnls = _jit(_hals_nnls_py)
