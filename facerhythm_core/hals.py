"""Non-negative CP by HALS, in numpy and in torch: tensorly's
``non_negative_parafac_hals`` without its per-mode unfolding copies.

:func:`hals_cp_numpy` (CPU) and :func:`hals_cp_torch` (any device) prepare their
arrays and run the same outer iterations (:func:`_hals_iterations`, two GEMM passes
over the tensor per iteration); :func:`hals_nnls` runs the inner row-wise NNLS sweeps
(numpy, numba-compiled in :mod:`.hals_kernels`, or torch on a GPU), and
:func:`initial_factors` draws tensorly's non-negative initial factors.
:func:`.tca_fit.fit_cp` chooses the engine.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .errors import TCAError

logger = logging.getLogger(__name__)


def khatri_rao(mats):
    """Column-wise Kronecker product; the first matrix's row index varies slowest."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


_NNLS_KERNEL: list = []
#: tensors at least this large use the numba NNLS kernel (see hals_nnls)
_NUMBA_MIN_ELEMENTS = 1 << 24


def _nnls_kernel():
    """The compiled NNLS sweeps (:mod:`.hals_kernels`), or None without numba."""
    if not _NNLS_KERNEL:
        from . import hals_kernels

        _NNLS_KERNEL.append(hals_kernels.hals_nnls)
    return _NNLS_KERNEL[0]


def _hals_nnls_numpy(UtM, UtU, V, n_iter_max: int = 5, tol: float = 1e-8):
    """:func:`hals_nnls` on numpy arrays, in float64 (V, float32 or float64, is updated
    in place at the end): a few numpy calls per row instead of torch's ~6 dispatches,
    each several times dearer than numpy's on small rows."""
    U = UtU.astype(np.float64)
    M = UtM.astype(np.float64)
    W = V.astype(np.float64)
    buf = np.empty_like(W)
    diag = U.diagonal().copy()
    rows = [k for k in range(diag.shape[0]) if diag[k]]  # tensorly skips zero diagonals
    # row views made once; the update runs in place on one buffer (the same operations,
    # in the same order, as (M[k] - U[k] @ W) / d + W[k]: the same bits, fewer allocations)
    work = [(U[k], M[k], W[k], float(diag[k])) for k in rows]
    new = np.empty(W.shape[1], dtype=np.float64)
    # bound once: with rank 10 and short factors the sweeps are ~50 rows of tiny calls,
    # where np.dot and np.copyto cost less than matmul and slice assignment (~10 %)
    dot, subtract, maximum, vdot, copyto = np.dot, np.subtract, np.maximum, np.vdot, np.copyto
    err0 = 0.0
    for it in range(n_iter_max):
        # the last sweep's change decides nothing (the loop ends either way): not measured
        measure = it < n_iter_max - 1
        err = 0.0
        for u, m, w, d in work:
            dot(u, W, out=new)
            subtract(m, new, out=new)
            new /= d
            new += w
            maximum(new, 0.0, out=new)
            if measure:
                subtract(W, new, out=buf)  # tensorly's change measure: new vs every row
                err += float(vdot(buf, buf))
            copyto(w, new)
        if it == 0:
            err0 = err
        if measure and err < tol * err0:
            break
    V[...] = W
    return V


def hals_nnls(UtM, UtU, V, n_iter_max: int = 5, tol: float = 1e-8, kernel: str = "numpy"):
    """tensorly's ``hals_nnls`` (0.10.0, exact=False, no sparsity): in place on V (R, n).

    Row-wise Gauss-Seidel sweeps ``V[k] = max(0, V[k] + (UtM[k] - UtU[k] @ V) / UtU[k, k])``;
    stops after ``n_iter_max`` sweeps or once a sweep's change is below ``tol`` times the
    first sweep's change, measured exactly as tensorly measures it.

    On the CPU the sweeps run in float64 (tensorly: in the tensor's dtype), with numpy
    (``kernel="numpy"``, no set-up cost, for small factors) or numba-compiled
    (``kernel="numba"``, ~1 s to import and load once per process, 10x faster on long
    factors such as an hour's time axis); elsewhere (GPU) with torch.
    """
    if isinstance(V, np.ndarray) or V.device.type == "cpu":
        m, u, v = (a if isinstance(a, np.ndarray) else a.numpy() for a in (UtM, UtU, V))
        if kernel == "numba" and _nnls_kernel() is not None:
            _nnls_kernel()(np.ascontiguousarray(m), np.ascontiguousarray(u), v, int(n_iter_max), float(tol))
        else:
            _hals_nnls_numpy(m, u, v, n_iter_max, tol)
        return V
    diag = UtU.diagonal().tolist()
    err0 = None
    for it in range(n_iter_max):
        err = 0.0
        for k, d in enumerate(diag):
            if d:  # tensorly skips rows whose Gram diagonal is zero
                new = ((UtM[k] - UtU[k] @ V + d * V[k]) / d).clamp_(min=0)
                # tensorly computes norm(V - newV) with newV broadcast over every row of
                # V, not just row k; kept as is because its early stop depends on it
                err = err + (V - new).square().sum()
                V[k] = new
        err = float(err)
        if it == 0:
            err0 = err
        if err < tol * err0:
            break
    return V


def hals_cp_torch(
    tensor,
    factors,
    n_iter_max: int = 100,
    tol: float = 1e-7,
    cvg_criterion: str = "abs_rec_error",
    n_inner: int = 5,
    log_every: int = 0,
    rel_tol: float = 0.0,
    nnls: str = "auto",
):
    """Non-negative CP by HALS: tensorly's ``non_negative_parafac_hals`` in torch.

    Same update order (modes 0..N-1), same Hadamard-of-Gram pseudo-inverse, same inner
    NNLS (5 row-wise sweeps with tensorly's early stop), same error formula and stopping
    rule. Faster because the tensor is never unfolded or copied: it is viewed as
    X (P, K), P = prod of all axes but the last, and each iteration makes two GEMM passes:
    ``Y = X @ C`` serves every mode but the last (their MTTKRPs are small contractions
    of Y with the other factors, since C does not change while they update) and
    ``KR^T @ X`` is the last mode's MTTKRP.

    Parameters
    ----------
    tensor : torch.Tensor, shape (I_0, ..., I_{N-1}), float
        Put the longest axis (time) last for speed. Any device.
    factors : list of torch.Tensor, shapes (I_n, R)
        Non-negative initial factors (e.g. from tensorly's ``initialize_cp``); copied.
    n_iter_max, tol, cvg_criterion
        As in tensorly: stop when the change of the relative error is below ``tol``
        (``"abs_rec_error"``: absolute change; ``"rec_error"``: decrease). ``tol=0``
        and ``rel_tol=0`` skip the error computation.
    rel_tol : float
        Also stop once an iteration lowers the error by less than ``rel_tol`` times the
        previous error, e_{k-1} - e_k < rel_tol * e_{k-1} (0 = off; see docs/tca.md).
    nnls : {"auto", "numpy", "numba"}
        CPU kernel of the inner sweeps (see :func:`.tca_fit.fit_cp`).
    n_inner : int
        Inner HALS sweeps per mode (tensorly 0.10.0 uses 5).
    log_every : int
        Log the error every this many iterations (0 = never).

    Returns
    -------
    factors : list of torch.Tensor
    errors : list of float
        Relative reconstruction error per iteration (float64 scalars; tensorly keeps
        them in the tensor's dtype).
    """
    import torch

    shape = _check_cp(tuple(tensor.shape), cvg_criterion)
    N, R = len(shape), factors[0].shape[1]
    X = tensor.contiguous()
    Xm = X.reshape(-1, shape[-1])
    factors = [f.to(dtype=X.dtype, device=X.device).clone() for f in factors]
    # ||X||^2 in float64, a few rows at a time (no float64 copy of the whole tensor)
    step = max(1, (1 << 23) // max(1, shape[-1]))
    norm2 = sum(float(Xm[i : i + step].double().square().sum()) for i in range(0, Xm.shape[0], step))
    letters = "abcdefghijklmnopqstuvwxyz"[: N - 1]

    def first_modes(factors):
        # modes 0..N-2 all use the current last factor, so one pass gives them all;
        # (C^T X^T)^T is the same product as X C, several times faster for R << K
        Y = (factors[-1].T @ Xm.T).T.reshape(*shape[:-1], R)

        def mttkrp(n):
            if N == 3:  # two broadcast products: cheaper than einsum's dispatch
                return (Y * factors[1][None]).sum(1) if n == 0 else (Y * factors[0][:, None]).sum(0)
            ops, subs = [Y], [letters + "r"]
            for m in range(N - 1):
                if m != n:
                    ops.append(factors[m])
                    subs.append(letters[m] + "r")
            return torch.einsum(",".join(subs) + "->" + letters[n] + "r", *ops)

        return mttkrp

    return _hals_iterations(
        factors,
        norm2,
        first_modes,
        # last mode: MTTKRP = X^T KR(factors[:-1]), computed as KR^T @ X (R, K)
        lambda factors: khatri_rao(factors[:-1]).T @ Xm,
        lambda f: f.T.contiguous(),
        _nnls_for(nnls, X.numel()),
        n_iter_max,
        tol,
        cvg_criterion,
        n_inner,
        log_every,
        rel_tol,
    )


def hals_cp_numpy(
    tensor: np.ndarray,
    factors,
    n_iter_max: int = 100,
    tol: float = 1e-7,
    cvg_criterion: str = "abs_rec_error",
    n_inner: int = 5,
    log_every: int = 0,
    rel_tol: float = 0.0,
    nnls: str = "auto",
):
    """:func:`hals_cp_torch` on numpy arrays: the CPU engine, without torch.

    The same iterations (:func:`_hals_iterations`), computed with numpy's BLAS (results
    differ from the torch engine's by float32 rounding only). A job that never imports
    torch saves its ~1 s of import, and numpy's calls cost less than torch's dispatch on
    the small operations of short videos' tensors. Parameters and returns as
    :func:`hals_cp_torch`, with ndarrays.
    """
    shape = _check_cp(tuple(tensor.shape), cvg_criterion)
    N, R = len(shape), factors[0].shape[1]
    Xm = np.ascontiguousarray(tensor).reshape(-1, shape[-1])
    factors = [np.array(f, dtype=Xm.dtype) for f in factors]
    step = max(1, (1 << 23) // max(1, shape[-1]))
    norm2 = sum(float(np.square(Xm[i : i + step], dtype=np.float64).sum()) for i in range(0, Xm.shape[0], step))
    letters = "abcdefghijklmnopqstuvwxyz"[: N - 1]

    def first_modes(factors):
        Y = (Xm @ factors[-1]).reshape(*shape[:-1], R)  # one pass for modes 0..N-2

        def mttkrp(n):
            others = [m for m in range(N - 1) if m != n]
            subs = ",".join([letters + "r"] + [letters[m] + "r" for m in others])
            return np.einsum(subs + "->" + letters[n] + "r", Y, *[factors[m] for m in others])

        return mttkrp

    return _hals_iterations(
        factors,
        norm2,
        first_modes,
        lambda factors: _last_mttkrp(Xm, shape, factors),
        lambda f: np.ascontiguousarray(f.T),
        _nnls_for(nnls, Xm.size),
        n_iter_max,
        tol,
        cvg_criterion,
        n_inner,
        log_every,
        rel_tol,
    )


def _check_cp(shape: tuple, cvg_criterion: str) -> tuple:
    if cvg_criterion not in ("abs_rec_error", "rec_error"):
        raise TCAError(f"unknown cvg_criterion {cvg_criterion!r}")
    if len(shape) < 2:
        raise TCAError(f"CP needs a tensor with >= 2 axes, got shape {shape}")
    return shape


def _nnls_for(nnls: str, size: int) -> str:
    """The NNLS kernel: numba's one-off import pays for itself only on large tensors."""
    return nnls if nnls != "auto" else ("numba" if size >= _NUMBA_MIN_ELEMENTS else "numpy")


def _hals_iterations(
    factors, norm2, first_modes, last_mttkrp, rows, kernel, n_iter_max, tol, cvg_criterion, n_inner, log_every, rel_tol
):
    """The HALS iterations both engines run, on their own arrays (updated in place).

    ``first_modes(factors)`` makes one pass over the tensor with the current last factor
    and returns ``mttkrp(n)``, mode n's (I_n, R) MTTKRP for n < N-1 (it reads the
    factors as they are updated); ``last_mttkrp(factors)`` is the last mode's (R, K);
    ``rows(f)`` is f^T as a contiguous (R, I_n) array for the in-place NNLS.
    """
    N = len(factors)
    norm = math.sqrt(norm2)
    grams = [f.T @ f for f in factors]
    errors: list[float] = []
    for it in range(n_iter_max):
        mttkrp = first_modes(factors)
        for n in range(N - 1):
            V = rows(factors[n])
            hals_nnls(mttkrp(n).T, _hadamard_except(grams, n), V, n_iter_max=n_inner, kernel=kernel)
            factors[n] = V.T
            grams[n] = V @ V.T
        UtM = last_mttkrp(factors)
        V = rows(factors[-1])
        hals_nnls(UtM, _hadamard_except(grams, N - 1), V, n_iter_max=n_inner, kernel=kernel)
        factors[-1] = V.T
        grams[-1] = V @ V.T
        if tol or rel_tol:
            # the error from float64 Grams of the factors: from the float32 Grams its
            # estimate was ~5x noisier (demo: std 1.3e-6 vs 2.8e-7 about the exact
            # error), enough to fake an increase and stop the fit early
            err = _relative_error([_gram64(f) for f in factors], UtM, V, norm2, norm)
            errors.append(err)
            if log_every and (it % log_every == 0):
                logger.info("HALS iteration %d: relative error %.6g", it, err)
            if it >= 1 and _converged(errors, tol, rel_tol, cvg_criterion):
                logger.info("HALS converged after %d iterations (error %.6g)", it, err)
                break
    return factors, errors


def _last_mttkrp(Xm: np.ndarray, shape: tuple, factors: list) -> np.ndarray:
    """KR(factors[:-1])^T @ Xm, (R, K). For 3 axes as two contractions, (X_(0)^T A)
    then B, without the (I_0 I_1, R) Khatri-Rao product: ~4x faster on a trial's
    tensor; used when the intermediate (I_1 K, R) is no larger than the tensor."""
    R = factors[0].shape[1]
    if len(shape) != 3 or R > shape[0]:
        return khatri_rao(factors[:-1]).T @ Xm
    A, B = factors[0], factors[1]
    T = (Xm.reshape(shape[0], -1).T @ A).reshape(shape[1], shape[2], R)
    return np.einsum("bkr,br->rk", T, B)


def _gram64(f):
    """f^T f in float64 (ndarray or torch tensor)."""
    f = f.astype(np.float64) if isinstance(f, np.ndarray) else f.double()
    return f.T @ f


def _hadamard_except(grams: list, n: int):
    """Elementwise product of every Gram (R, R) but mode ``n``'s: the NNLS's U^T U."""
    out = None
    for m, g in enumerate(grams):
        if m != n:
            out = g * 1 if out is None else out * g  # g * 1: a copy, on any array type
    return out


def _relative_error(grams64: list, UtM, V, norm2: float, norm: float) -> float:
    """||X - X_hat|| / ||X|| after an iteration, in float64, without forming X_hat.

    ||X_hat||^2 is the sum of the Hadamard product of the factors' Grams (R, R), given
    in float64 (:func:`_gram64`); <X, X_hat> is that of the last mode's MTTKRP ``UtM``
    (R, K) and factor ``V`` (R, K).
    """
    g = grams64[0]
    for gm in grams64[1:]:
        g = g * gm
    model2 = float(g.sum())
    if isinstance(V, np.ndarray):
        iprod = float(np.vdot(UtM.astype(np.float64), V.astype(np.float64)))
    else:
        iprod = float((UtM.double() * V.double()).sum())
    return math.sqrt(abs(norm2 + model2 - 2 * iprod)) / norm


def _converged(errors: list, tol: float, rel_tol: float, cvg_criterion: str) -> bool:
    """tensorly's stopping test on the last two errors, or the relative one (``rel_tol``)."""
    dec = errors[-2] - errors[-1]
    stop = abs(dec) < tol if cvg_criterion == "abs_rec_error" else dec < tol
    return stop or dec < rel_tol * errors[-2]


def initial_factors(X, rank: int, init: str, svd: str, random_state) -> list:
    """tensorly's ``initialize_cp(X, rank, init, svd, non_negative=True,
    random_state=random_state, normalize_factors=False)`` factors.

    ``init="random"`` is done here without importing tensorly (about 1 s of import per
    process): tensorly draws ``RandomState(seed).random_sample((I_n, rank))`` per axis in
    order, casts it to the tensor's dtype and takes absolute values; the same
    numbers come out (tested). Other inits go through tensorly.
    """
    import torch

    if init == "random" and (random_state is None or isinstance(random_state, int)):
        draws = initial_factors_numpy(X.shape, rank, random_state)
        return [torch.tensor(f, dtype=X.dtype, device=X.device).abs() for f in draws]
    import tensorly as tl
    from tensorly.decomposition._cp import initialize_cp

    with tl.backend_context("pytorch", local_threadsafe=True):
        init_cp = initialize_cp(
            X, rank, init=init, svd=svd, non_negative=True, random_state=random_state, normalize_factors=False
        )
    return list(init_cp.factors)


def initial_factors_numpy(shape, rank: int, random_state) -> list:
    """The float64 draws of tensorly's random init (see :func:`initial_factors`):
    ``RandomState(random_state).random_sample((I_n, rank))`` per axis, in order (the
    global RandomState for None). Cast them to the tensor's dtype for its factors."""
    rng = np.random.mtrand._rand if random_state is None else np.random.RandomState(random_state)
    return [rng.random_sample((int(s), rank)) for s in shape]
