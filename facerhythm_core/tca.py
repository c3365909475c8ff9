"""Tensor component analysis (TCA): non-negative CP decomposition of spectrograms.

Re-implements the reference's ``decomposition.TCA`` (face-rhythm 0.3.3) as pure
functions:

1. :func:`rearrange_data` folds ``(xy, points)`` into one axis (x rows first, then y
   rows), optionally unfolds complex values into the time axis, cuts time windows and
   handles several videos (``separate`` / ``concatenate`` / ``stack``).
2. :func:`normalize_tensor` subtracts the mean and/or divides by the std along a named
   axis, with an epsilon (the reference divides by zero).
3. :func:`fit_cp` fits a CP model. ``CP_NN_HALS`` runs on a torch re-implementation of
   tensorly's HALS (same init, same update rule, same 5 inner sweeps and inner stopping
   rule) that avoids tensorly's per-mode unfolding copies; every method can also run
   through tensorly itself, inside ``tl.backend_context`` so that no backend change leaks.
4. :func:`explained_variance` / :func:`order_by_evr` rank the components by explained
   variance ratio without touching the caller's data (the reference mean-centres it in
   place).
5. :func:`unrearrange_factors` maps the fitted factor matrices back to the original
   axes: points x, points y, frequency, time per video, and video/session.

:func:`decompose` and :func:`decompose_joint` chain the steps; :func:`write_tca_h5`
and :func:`read_tca_h5` hold the file layout described in ``docs/tca.md``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import TCAError

logger = logging.getLogger(__name__)

#: name of the folded (xy, points) axis, as the reference names it
XY_POINTS = "(xy points)"
#: CP methods (tensorly class names)
METHODS = ("CP_NN_HALS", "CP", "RandomizedCP", "ConstrainedCP")
#: how several videos (dict elements) enter the decomposition
VIDEO_MODES = ("separate", "concatenate", "stack")
#: name of the single decomposition made by ``concatenate`` and ``stack``
ALL = "all"

# keyword arguments of tensorly's CP_NN_HALS that the torch engine reproduces, with
# the only values it supports (None = any value)
_TORCH_HALS_PARAMS = {
    "svd": None,
    "verbose": None,
    "cvg_criterion": None,
    "normalize_factors": (False,),
    "exact": (False,),
    "nn_modes": ("all",),
    "fixed_modes": (None, (), []),
    "sparsity_coefficients": (None,),
}


# ----------------------------------------------------------------------------------
# rearrangement
# ----------------------------------------------------------------------------------


@dataclass
class Layout:
    """How one fitted tensor maps back onto the spectrogram axes.

    Attributes
    ----------
    dims : tuple of str
        Names of the fitted tensor's axes, e.g. ``("(xy points)", "frequency", "time")``
        or ``("video", "(xy points)", "frequency", "time")`` for ``stack``.
    keys : tuple of str
        The input elements (video keys, or ``"session/key"`` for joint runs) in this
        tensor, in order along the time axis (``concatenate``) or the stacked axis.
    n_time : tuple of int
        Time bins each element contributes (after windowing, before complex unfolding).
    n_points : int
        N, the number of tracked points.
    complex_unfolded : bool
        Whether the time axis holds interleaved (real, imag) rows.
    windows : tuple
        ``(start, stop)`` inclusive time-bin window applied to each element, or None.
    """

    dims: tuple
    keys: tuple
    n_time: tuple
    n_points: int
    complex_unfolded: bool = False
    windows: tuple = ()

    @property
    def stack_dim(self) -> str | None:
        return self.dims[0] if len(self.dims) == 4 else None


@dataclass
class Rearranged:
    """Tensors ready to decompose, one per decomposition name, and their layouts."""

    tensors: dict
    layouts: dict
    videos: str


def _as_window(w, n: int, key: str):
    if w is None:
        return None
    if len(w) != 2:
        raise TCAError(f"time window for {key!r} must be a (start, stop) pair, got {w!r}")
    start, stop = int(w[0]), int(w[1])
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    if not 0 <= start <= stop < n:
        raise TCAError(
            f"time window {tuple(w)} for {key!r} is outside its {n} time bins; "
            f"give inclusive (start, stop) bin indices with 0 <= start <= stop < {n}"
        )
    return (start, stop)


def rearrange_data(
    data: Mapping[str, np.ndarray],
    videos: str = "separate",
    complex_unfold: bool = False,
    windows=None,
    element_dim: str = "video",
) -> Rearranged:
    """Turn spectrograms into the tensors that TCA decomposes.

    Parameters
    ----------
    data : mapping of str -> ndarray, shape (2, N, F, T_k)
        Spectrograms per video key; axis 0 is (x, y). Real (magnitudes) or complex.
    videos : {"separate", "concatenate", "stack"}
        ``separate``: one tensor per key, shape (2N, F, T_k). ``concatenate``: one tensor
        (2N, F, sum T_k) joined along time in key order. ``stack``: one tensor
        (V, 2N, F, T) on a new leading axis named ``element_dim`` (all T_k equal).
    complex_unfold : bool
        Complex input only: split each value into (real, imag) rows interleaved along
        time, so the time axis becomes 2T (the reference's ``concat_complexDim``).
        Complex input without it is an error (take magnitudes upstream).
    windows : None, (start, stop), sequence of pairs, or mapping of key -> pair or None
        Inclusive time-bin windows cut before anything else (the reference's
        ``idx_windows``). A single pair applies to every key; a sequence gives one
        pair (or None) per key in order. Negative indices count from the end.
    element_dim : str
        Name of the stacked axis (``"video"``, or ``"session"`` for joint runs).

    Returns
    -------
    Rearranged
        ``tensors[name]`` and ``layouts[name]``; name is the video key for
        ``separate`` and ``"all"`` otherwise. Inputs are never modified.
    """
    if videos not in VIDEO_MODES:
        raise TCAError(f"videos must be one of {VIDEO_MODES}, got {videos!r}")
    if not data:
        raise TCAError("no spectrograms to decompose")
    keys = [str(k) for k in data]
    arrays = [np.asarray(data[k]) for k in data]
    n_points = freq = None
    for k, a in zip(keys, arrays):
        if a.ndim != 4 or a.shape[0] != 2:
            raise TCAError(f"spectrogram {k!r} has shape {a.shape}; expected (2, N, F, T) with axis 0 = (x, y)")
        if np.iscomplexobj(a) and not complex_unfold:
            raise TCAError(
                f"spectrogram {k!r} is complex; set complex_unfold to fold (real, "
                "imag) into time, or write magnitudes (spectrogram take_abs: true)"
            )
        if not np.iscomplexobj(a) and complex_unfold:
            raise TCAError(
                f"complex_unfold needs complex spectrograms but {k!r} is real; "
                "set spectrogram take_abs: false or turn complex_unfold off"
            )
        if n_points is None:
            n_points, freq = a.shape[1], a.shape[2]
        elif videos != "separate" and a.shape[1:3] != (n_points, freq):
            raise TCAError(
                f"cannot {videos} spectrograms of different (points, frequency) "
                f"shapes: {keys[0]!r} has {(n_points, freq)}, {k!r} has "
                f"{a.shape[1:3]}; all elements must share one point set and "
                "filter bank"
            )
    if windows is None or (
        isinstance(windows, Sequence)
        and len(windows) == 2
        and not isinstance(windows[0], (Sequence, np.ndarray))
        and windows[0] is not None
    ):
        win = {k: windows for k in keys}
    elif isinstance(windows, Mapping):
        unknown = set(map(str, windows)) - set(keys)
        if unknown:
            raise TCAError(f"time windows name unknown keys {sorted(unknown)}; keys are {keys}")
        win = {k: windows.get(k) for k in keys}
    else:  # a sequence of windows in key order, like the reference's idx_windows
        if len(windows) != len(keys):
            raise TCAError(f"{len(windows)} time windows for {len(keys)} keys {keys}")
        win = dict(zip(keys, windows))

    pieces, n_time, wins = [], [], []
    for k, a in zip(keys, arrays):
        w = _as_window(win[k], a.shape[3], k)
        if w is not None:
            a = a[..., w[0] : w[1] + 1]
        n_time.append(a.shape[3])
        wins.append(w)
        # (2, N, F, T) -> (2N, F, T): x rows first, then y rows (xy is the outer index)
        a = a.reshape(2 * a.shape[1], a.shape[2], a.shape[3])
        if complex_unfold:
            # (2N, F, T) complex -> (2N, F, T, 2) -> (2N, F, 2T): re, im, re, im, ...
            a = np.stack([a.real, a.imag], axis=-1).reshape(a.shape[0], a.shape[1], -1)
        pieces.append(a)

    base = (XY_POINTS, "frequency", "time")
    if videos == "separate":
        tensors = {k: p for k, p in zip(keys, pieces)}
        layouts = {
            k: Layout(base, (k,), (t,), p.shape[0] // 2, complex_unfold, (w,))
            for k, p, t, w in zip(keys, pieces, n_time, wins)
        }
    elif videos == "concatenate":
        tensors = {ALL: np.concatenate(pieces, axis=-1)}
        layouts = {ALL: Layout(base, tuple(keys), tuple(n_time), n_points, complex_unfold, tuple(wins))}
    else:
        if len(set(n_time)) != 1:
            raise TCAError(
                f"stack needs equal time lengths but the {element_dim}s have "
                f"{dict(zip(keys, n_time))} time bins; use videos: concatenate, "
                "or time windows of equal length"
            )
        tensors = {ALL: np.stack(pieces, axis=0)}
        layouts = {
            ALL: Layout((element_dim,) + base, tuple(keys), tuple(n_time), n_points, complex_unfold, tuple(wins))
        }
    return Rearranged(tensors, layouts, videos)


def normalize_tensor(
    tensor: np.ndarray,
    dims: Sequence[str],
    mean_subtract: bool = False,
    std_divide: bool = False,
    dim: str = "time",
    epsilon: float = 1e-8,
    out: np.ndarray | None = None,
    block_bytes: int = 64 << 20,
) -> tuple[np.ndarray, dict]:
    """Centre and/or scale every fibre along one named axis.

    Parameters
    ----------
    tensor : ndarray, float
        Tensor to normalize; left unchanged unless it is ``out``.
    dims : sequence of str
        Axis names of ``tensor`` (e.g. ``Layout.dims``).
    mean_subtract, std_divide : bool
        Subtract the mean / divide by the unbiased (N-1) std along ``dim``.
    dim : str
        Axis to normalize along, e.g. ``"time"``: each (point-row, frequency) fibre
        then has unit std over time, so quiet points weigh as much as loud ones.
    epsilon : float
        Added to the std before dividing, so a constant fibre (e.g. a frozen point)
        stays finite instead of becoming inf/NaN as in the reference.
    out : ndarray, optional
        Where to write the result: ``tensor`` itself normalizes in place (no second
        tensor-sized array). Default: a new array.
    block_bytes : int
        The float64 statistics are computed on blocks of about this size (fibres are
        independent, so the result is the same as on the whole tensor at once).

    Returns
    -------
    out : ndarray
        Normalized tensor, same shape as ``tensor``, float dtype of ``tensor``
        (float32 for other input).
    info : dict
        ``n_constant_fibres``: fibres whose std was <= epsilon.
    """
    info = {
        "mean_subtract": bool(mean_subtract),
        "std_divide": bool(std_divide),
        "dim": dim,
        "epsilon": float(epsilon),
        "n_constant_fibres": 0,
    }
    if not (mean_subtract or std_divide):
        return tensor, info
    if dim not in dims:
        raise TCAError(f"normalize_dim {dim!r} is not an axis of the tensor; axes are {list(dims)}")
    if epsilon < 0:
        raise TCAError(f"epsilon must be >= 0, got {epsilon}")
    ax = list(dims).index(dim)
    if tensor.shape[ax] < 2 and std_divide:
        raise TCAError(f"cannot divide by the std along {dim!r}: it has only {tensor.shape[ax]} entry")
    x = np.asarray(tensor)
    dtype = x.dtype if x.dtype.kind == "f" else np.float32
    if out is None:
        out = np.empty(x.shape, dtype)
    elif out.shape != x.shape or out.dtype != dtype:
        raise TCAError(f"out must be a {dtype} array of shape {x.shape}")
    # statistics in float64 so long time axes do not lose precision, on blocks along
    # another axis so that no float64 copy of the whole tensor is made
    bax = 1 if ax == 0 and x.ndim > 1 else 0
    per_index = 8 * x.size // max(1, x.shape[bax])
    step = max(1, int(block_bytes) // max(1, per_index))
    n_const = 0
    for i in range(0, max(1, x.shape[bax]), step):
        sl = (slice(None),) * bax + (slice(i, i + step),)
        x64 = x[sl].astype(np.float64)
        if std_divide:
            std = x64.std(axis=ax, ddof=1, keepdims=True)
            n_const += int((std <= epsilon).sum())
        if mean_subtract:
            x64 -= x64.mean(axis=ax, keepdims=True)
        if std_divide:
            x64 /= std + epsilon
        out[sl] = x64
    if std_divide:
        info["n_constant_fibres"] = n_const
        if n_const:
            logger.warning(
                "%d fibre(s) are constant along %r (std <= %g); they are divided by std + epsilon instead of by zero",
                n_const,
                dim,
                epsilon,
            )
    return out, info


# ----------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------


@dataclass
class CPFit:
    """A fitted CP model.

    Attributes
    ----------
    weights : ndarray, float64, shape (R,)
    factors : list of ndarray, float64, shapes (I_n, R)
        One factor matrix per tensor axis.
    errors : ndarray, float64, shape (n_iter,)
        Relative reconstruction error ||X - X_hat|| / ||X|| after each iteration as the
        method tracks it (empty for methods that do not report one).
    engine : str
        ``"torch"`` (our HALS) or ``"tensorly"``.
    method : str
    seconds : float
        Wall time of the fit.
    """

    weights: np.ndarray
    factors: list
    errors: np.ndarray
    engine: str
    method: str
    seconds: float = 0.0

    @property
    def rank(self) -> int:
        return int(self.weights.shape[0])


def _khatri_rao(mats):
    """Column-wise Kronecker product; the first matrix's row index varies slowest."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


_NNLS_KERNEL: list = []
#: tensors at least this large use the numba NNLS kernel (see _hals_nnls)
_NUMBA_MIN_ELEMENTS = 1 << 24


def _nnls_kernel():
    """The compiled NNLS sweeps (:mod:`.hals_kernels`), or None without numba."""
    if not _NNLS_KERNEL:
        from .hals_kernels import hals_nnls

        _NNLS_KERNEL.append(hals_nnls)
    return _NNLS_KERNEL[0]


def _hals_nnls_numpy(UtM, UtU, V, n_iter_max: int = 5, tol: float = 1e-8):
    """:func:`_hals_nnls` on numpy arrays, in float64 (V, float32 or float64, is updated
    in place at the end): a few numpy calls per row instead of torch's ~6 dispatches,
    each several times dearer than numpy's on small rows."""
    U = UtU.astype(np.float64)
    M = UtM.astype(np.float64)
    W = V.astype(np.float64)
    buf = np.empty_like(W)
    diag = U.diagonal().copy()
    rows = [k for k in range(diag.shape[0]) if diag[k]]  # tensorly skips zero diagonals
    err0 = 0.0
    for it in range(n_iter_max):
        err = 0.0
        for k in rows:
            new = (M[k] - U[k] @ W) / diag[k]
            new += W[k]
            np.maximum(new, 0.0, out=new)
            np.subtract(W, new, out=buf)  # tensorly's change measure: new vs every row
            err += float(np.vdot(buf, buf))
            W[k] = new
        if it == 0:
            err0 = err
        if err < tol * err0:
            break
    V[...] = W
    return V


def _hals_nnls(UtM, UtU, V, n_iter_max: int = 5, tol: float = 1e-8, kernel: str = "numpy"):
    """tensorly's ``hals_nnls`` (0.10.0, exact=False, no sparsity): in place on V (R, n).

    Row-wise Gauss-Seidel sweeps ``V[k] = max(0, V[k] + (UtM[k] - UtU[k] @ V) / UtU[k, k])``;
    stops after ``n_iter_max`` sweeps or once a sweep's change is below ``tol`` times the
    first sweep's change, measured exactly as tensorly measures it.

    On the CPU the sweeps run in float64 (tensorly: in the tensor's dtype), with numpy
    (``kernel="numpy"``, no set-up cost, for small factors) or numba-compiled
    (``kernel="numba"``, ~1 s to import and load once per process, 10x faster on long
    factors such as an hour's time axis); elsewhere (GPU) with torch.
    """
    if V.device.type == "cpu":
        if kernel == "numba" and _nnls_kernel() is not None:
            _nnls_kernel()(UtM.contiguous().numpy(), UtU.contiguous().numpy(), V.numpy(), int(n_iter_max), float(tol))
        else:
            _hals_nnls_numpy(UtM.numpy(), UtU.numpy(), V.numpy(), n_iter_max, tol)
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
        CPU kernel of the inner sweeps (see :func:`fit_cp`).
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

    if cvg_criterion not in ("abs_rec_error", "rec_error"):
        raise TCAError(f"unknown cvg_criterion {cvg_criterion!r}")
    shape = tuple(tensor.shape)
    N = len(shape)
    if N < 2:
        raise TCAError(f"CP needs a tensor with >= 2 axes, got shape {shape}")
    R = factors[0].shape[1]
    X = tensor.contiguous()
    Xm = X.reshape(-1, shape[-1])
    factors = [f.to(dtype=X.dtype, device=X.device).clone() for f in factors]
    grams = [f.T @ f for f in factors]
    # ||X||^2 in float64, a few rows at a time (no float64 copy of the whole tensor)
    step = max(1, (1 << 23) // max(1, shape[-1]))
    norm2 = sum(float(Xm[i : i + step].double().square().sum()) for i in range(0, Xm.shape[0], step))
    norm = math.sqrt(norm2)
    letters = "abcdefghijklmnopqstuvwxyz"[: N - 1]
    errors: list[float] = []
    # numba's one-off import pays for itself only on large tensors (long factors)
    kernel = nnls if nnls != "auto" else ("numba" if X.numel() >= _NUMBA_MIN_ELEMENTS else "numpy")

    def hadamard_except(n):
        out = torch.ones((R, R), dtype=X.dtype, device=X.device)
        for m, g in enumerate(grams):
            if m != n:
                out = out * g
        return out

    def mttkrp_from_y(Y, n):
        if N == 3:  # two broadcast products: cheaper than einsum's dispatch
            return (Y * factors[1][None]).sum(1) if n == 0 else (Y * factors[0][:, None]).sum(0)
        ops, subs = [Y], [letters + "r"]
        for m in range(N - 1):
            if m != n:
                ops.append(factors[m])
                subs.append(letters[m] + "r")
        return torch.einsum(",".join(subs) + "->" + letters[n] + "r", *ops)

    for it in range(n_iter_max):
        # modes 0..N-2 all use the current last factor, so one pass gives them all;
        # (C^T X^T)^T is the same product as X C, several times faster for R << K
        Y = (factors[-1].T @ Xm.T).T.reshape(*shape[:-1], R)
        for n in range(N - 1):
            mttkrp = mttkrp_from_y(Y, n)
            V = factors[n].T.contiguous()
            _hals_nnls(mttkrp.T, hadamard_except(n), V, n_iter_max=n_inner, kernel=kernel)
            factors[n] = V.T
            grams[n] = V @ V.T
        # last mode: MTTKRP = X^T KR(factors[:-1]), computed as KR^T @ X (R, K)
        UtM = _khatri_rao(factors[:-1]).T @ Xm
        V = factors[-1].T.contiguous()
        _hals_nnls(UtM, hadamard_except(N - 1), V, n_iter_max=n_inner, kernel=kernel)
        factors[-1] = V.T
        grams[-1] = V @ V.T
        if tol or rel_tol:
            g = torch.ones((R, R), dtype=torch.float64, device=X.device)
            for gm in grams:
                g = g * gm.double()
            model2 = float(g.sum())
            iprod = float((UtM.double() * V.double()).sum())
            err = math.sqrt(abs(norm2 + model2 - 2 * iprod)) / norm
            errors.append(err)
            if log_every and (it % log_every == 0):
                logger.info("HALS iteration %d: relative error %.6g", it, err)
            if it >= 1:
                dec = errors[-2] - errors[-1]
                stop = abs(dec) < tol if cvg_criterion == "abs_rec_error" else dec < tol
                if stop or dec < rel_tol * errors[-2]:
                    logger.info("HALS converged after %d iterations (error %.6g)", it, err)
                    break
    return factors, errors


def _initial_factors(X, rank: int, init: str, svd: str, random_state) -> list:
    """tensorly's ``initialize_cp(X, rank, init, svd, non_negative=True,
    random_state=random_state, normalize_factors=False)`` factors.

    ``init="random"`` is done here without importing tensorly (about 1 s of import per
    process): tensorly draws ``RandomState(seed).random_sample((I_n, rank))`` per axis in
    order, casts it to the tensor's dtype and takes absolute values; the same
    numbers come out (tested). Other inits go through tensorly.
    """
    import torch

    if init == "random" and (random_state is None or isinstance(random_state, int)):
        rng = np.random.mtrand._rand if random_state is None else np.random.RandomState(random_state)
        return [torch.tensor(rng.random_sample((int(s), rank)), dtype=X.dtype, device=X.device).abs() for s in X.shape]
    import tensorly as tl
    from tensorly.decomposition._cp import initialize_cp

    with tl.backend_context("pytorch", local_threadsafe=True):
        init_cp = initialize_cp(
            X, rank, init=init, svd=svd, non_negative=True, random_state=random_state, normalize_factors=False
        )
    return list(init_cp.factors)


def _check_method_params(method: str, params: Mapping) -> None:
    if method == "RandomizedCP" and "n_samples" not in params:
        raise TCAError(
            "RandomizedCP needs method_params.n_samples (the number of sampled fibres per iteration, e.g. 1000)"
        )


def _torch_engine_ok(params: Mapping) -> str | None:
    """None if the torch HALS engine reproduces these CP_NN_HALS kwargs, else why not."""
    for k, v in params.items():
        if k not in _TORCH_HALS_PARAMS:
            return f"method_params.{k}"
        allowed = _TORCH_HALS_PARAMS[k]
        if allowed is not None and not any(v == a or (v is None and a is None) for a in allowed):
            return f"method_params.{k}={v!r}"
    return None


def fit_cp(
    tensor,
    method: str = "CP_NN_HALS",
    rank: int = 10,
    n_iter_max: int = 200,
    init: str = "random",
    tol: float = 1e-9,
    random_state: int | None = 0,
    method_params: Mapping | None = None,
    backend: str = "pytorch",
    device: str = "cpu",
    dtype: str = "float32",
    engine: str = "auto",
    log_every: int = 0,
    rel_tol: float = 0.0,
    nnls: str = "auto",
) -> CPFit:
    """Fit a CP model with the reference's methods.

    Parameters
    ----------
    tensor : ndarray or torch.Tensor, real
        Tensor to decompose (e.g. (2N, F, T)); not modified.
    method : {"CP_NN_HALS", "CP", "RandomizedCP", "ConstrainedCP"}
        tensorly class of that name (the reference's choice).
    rank, n_iter_max, init, tol, random_state
        As the reference passes them (``init`` "random" or "svd"; ``random_state``
        seeds tensorly's initialization; None is not reproducible). ``tol`` maps to
        ``tol_outer`` for ConstrainedCP.
    method_params : mapping, optional
        Further keyword arguments of the tensorly class.
    backend : {"pytorch", "numpy"}
        tensorly backend for the tensorly engine (used only inside this call).
    device : str
        torch device ("cpu", "cuda", ...); the numpy backend always runs on the CPU.
    dtype : {"float32", "float64"}
        Compute precision (the reference uses float32).
    engine : {"auto", "torch", "tensorly"}
        ``auto`` uses the torch HALS engine for CP_NN_HALS when ``method_params`` allow
        it, tensorly otherwise. ``torch`` insists (error if impossible).
    log_every : int
        Log progress every this many iterations (torch engine).
    rel_tol : float
        Torch engine: also stop once an iteration improves the relative error by less
        than ``rel_tol`` times the error (0 = only tensorly's ``tol`` test; the config
        default is 1e-6, see docs/tca.md). tensorly's engines ignore it.
    nnls : {"auto", "numpy", "numba"}
        Torch engine on the CPU: how the inner NNLS sweeps run (:func:`_hals_nnls`).
        ``auto``: numba for tensors of 2**24 elements or more, numpy below.

    Returns
    -------
    CPFit
    """
    import torch

    if method not in METHODS:
        raise TCAError(f"method must be one of {METHODS}, got {method!r}")
    if engine not in ("auto", "torch", "tensorly"):
        raise TCAError(f"engine must be 'auto', 'torch' or 'tensorly', got {engine!r}")
    if backend not in ("pytorch", "numpy"):
        raise TCAError(f"backend must be 'pytorch' or 'numpy', got {backend!r}")
    if dtype not in ("float32", "float64"):
        raise TCAError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if int(rank) < 1:
        raise TCAError(f"rank must be >= 1, got {rank}")
    if not float(rel_tol) >= 0:
        raise TCAError(f"rel_tol must be >= 0, got {rel_tol}")
    if nnls not in ("auto", "numpy", "numba"):
        raise TCAError(f"nnls must be 'auto', 'numpy' or 'numba', got {nnls!r}")
    # a rank above the shortest data axis ((xy points), frequency, time) gives degenerate,
    # non-unique factors: say which axis is too short and how to fix it. A stacked
    # video/session axis (leading, short by nature) is exempt.
    shape = tuple(int(n) for n in tensor.shape)
    data_axes = list(range(max(0, len(shape) - 3), len(shape)))
    if int(rank) > min(shape[a] for a in data_axes):
        ax = min(data_axes, key=lambda a: shape[a])
        raise TCAError(
            f"rank {rank} is larger than axis {ax} of the tensor {shape} "
            f"({shape[ax]} entries); choose tca.rank <= {shape[ax]}, or give that "
            "axis more entries (longer videos or videos: concatenate for time)"
        )
    params = dict(method_params or {})
    _check_method_params(method, params)
    if np.iscomplexobj(tensor) if isinstance(tensor, np.ndarray) else torch.is_complex(tensor):
        raise TCAError("CP here needs a real tensor; take magnitudes or use complex_unfold")

    use_torch = False
    if method == "CP_NN_HALS" and engine != "tensorly":
        why = _torch_engine_ok(params)
        if why is None:
            use_torch = True
        elif engine == "torch":
            raise TCAError(
                f"the torch HALS engine does not support {why}; use engine 'tensorly' or drop that parameter"
            )
        else:
            logger.info("using tensorly's CP_NN_HALS because of %s", why)
    elif engine == "torch":
        raise TCAError(f"the torch engine implements CP_NN_HALS only, not {method}")

    tdtype = getattr(torch, dtype)
    if backend == "numpy" and not use_torch and device != "cpu":
        logger.warning("tensorly's numpy backend runs on the CPU; ignoring device %s", device)
        device = "cpu"
    X = torch.as_tensor(tensor).to(device=device, dtype=tdtype)
    with _threads_for(X):
        return _fit_cp(
            X, use_torch, method, rank, n_iter_max, init, tol, random_state, params, backend, log_every, rel_tol, nnls
        )


def _fit_cp(
    X, use_torch, method, rank, n_iter_max, init, tol, random_state, params, backend, log_every, rel_tol, nnls
) -> CPFit:
    if not _all_finite(X):
        raise TCAError(
            "the tensor holds NaN or inf values; check the spectrograms (e.g. normalization of constant fibres)"
        )
    if method in ("CP_NN_HALS",) and float(X.min()) < 0:
        logger.warning(
            "the tensor has negative values (e.g. after mean subtraction); "
            "non-negative CP fits only its positive part well"
        )

    t0 = time.perf_counter()
    if use_torch:
        init_factors = _initial_factors(X, int(rank), init, params.get("svd", "truncated_svd"), random_state)
        factors, errors = hals_cp_torch(
            X,
            init_factors,
            n_iter_max=int(n_iter_max),
            tol=float(tol),
            cvg_criterion=params.get("cvg_criterion", "abs_rec_error"),
            log_every=log_every,
            rel_tol=float(rel_tol),
            nnls=nnls,
        )
        weights = np.ones(int(rank))
        factors = [f.detach().double().cpu().numpy() for f in factors]
    else:
        import tensorly as tl
        import tensorly.decomposition as tld

        kw = {"rank": int(rank), "n_iter_max": int(n_iter_max), "init": init, "random_state": random_state}
        kw["tol_outer" if method == "ConstrainedCP" else "tol"] = float(tol)
        kw.update(params)
        with tl.backend_context(backend, local_threadsafe=True):
            data = X if backend == "pytorch" else X.cpu().numpy()
            model = getattr(tld, method)(**kw)
            cp = model.fit_transform(data)
            errors = list(getattr(model, "errors_", []) or [])
        weights = np.asarray(_to_numpy(cp.weights), dtype=np.float64).reshape(-1)
        factors = [np.asarray(_to_numpy(f), dtype=np.float64) for f in cp.factors]
    seconds = time.perf_counter() - t0
    errors = np.asarray([float(_to_numpy(e)) for e in errors], dtype=np.float64)
    return CPFit(weights, factors, errors, "torch" if use_torch else "tensorly", method, seconds)


#: CPU tensors below this many elements are fitted on one thread (see _threads_for)
_ONE_THREAD_MAX_ELEMENTS = 1 << 22


class _threads_for:
    """Run a CPU fit of a small tensor on one torch thread, then restore the count.

    A HALS iteration on a short trial's tensor (e.g. 690 x 36 x 26) is ~50 small
    operations of well under a millisecond; splitting each over threads costs more
    than it saves, and on a busy machine, where the second thread waits for a core,
    it made such fits up to 10x slower (measured: a (24840, 26) @ (26, 10) product
    took 17 ms on 2 threads under load, 1.2 ms on one)."""

    def __init__(self, X):
        on_cpu = isinstance(X, np.ndarray) or X.device.type == "cpu"
        self.one = on_cpu and int(np.prod(X.shape)) < _ONE_THREAD_MAX_ELEMENTS
        self.before = None

    def __enter__(self):
        import torch

        if self.one and torch.get_num_threads() > 1:
            self.before = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)


def _all_finite(X, block_elements: int = 1 << 24) -> bool:
    """``isfinite(X).all()`` in blocks (no bool copy of the whole tensor)."""
    import torch

    flat = X.reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + block_elements]).all()) for i in range(0, flat.numel(), block_elements))


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------------
# explained variance and ordering
# ----------------------------------------------------------------------------------


@dataclass
class Variance:
    """Explained variance of a CP model.

    Attributes
    ----------
    evr : ndarray, float64, shape (R,)
        Per component: the squared correlation between the centred data and the
        centred component tensor (the reference's ``orthogonalizable_EVR``).
    evr_model : float
        1 - var(X - X_hat) / var(X).
    rel_error : float
        ||X - X_hat|| / ||X||.
    """

    evr: np.ndarray
    evr_model: float
    rel_error: float


def explained_variance(
    tensor, weights: np.ndarray, factors: Sequence[np.ndarray], chunk_bytes: int = 64 << 20, device: str = "cpu"
) -> Variance:
    """Per-component and whole-model explained variance, in float64, in chunks.

    Neither the data nor the factors are modified (the reference mean-centres the
    caller's data in place). Weights are applied per component; since the per-component
    EVR is a squared correlation, it does not depend on them at all.

    Parameters
    ----------
    tensor : ndarray or torch.Tensor, shape (I_0, ..., I_{N-1})
    weights : ndarray, shape (R,)
    factors : sequence of ndarray, shapes (I_n, R)
    chunk_bytes : int
        Size of the float64 working chunks (rows of axis 0).
    """
    import torch

    X = torch.as_tensor(tensor, device=device)
    shape = tuple(X.shape)
    if len(factors) != len(shape) or any(f.shape[0] != s for f, s in zip(factors, shape)):
        raise TCAError(f"factor shapes {[f.shape for f in factors]} do not match tensor shape {shape}")
    F = [torch.as_tensor(np.asarray(f), dtype=torch.float64, device=device) for f in factors]
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64, device=device)
    R = w.shape[0]
    # X as (P, K), K = last axis; KR of the other factors is only (P, R)
    X2 = X.reshape(-1, shape[-1])
    kr = _khatri_rao(F[:-1]) if len(F) > 1 else torch.ones((1, R), dtype=torch.float64, device=device)
    C = F[-1]
    rows = max(1, int(chunk_bytes // (8 * shape[-1] * 3)))
    inner = torch.zeros(R, dtype=torch.float64, device=device)
    s_x = ss_x = s_r = ss_r = 0.0
    for i in range(0, X2.shape[0], rows):
        xc = X2[i : i + rows].to(torch.float64)
        a = kr[i : i + rows]
        inner += (a * (xc @ C)).sum(0)
        resid = xc - (a * w) @ C.T
        s_x += float(xc.sum())
        ss_x += float(xc.square().sum())
        s_r += float(resid.sum())
        ss_r += float(resid.square().sum())
    n = float(X.numel())
    ssc_x = ss_x - s_x * s_x / n
    ssc_r = ss_r - s_r * s_r / n
    mean_x = s_x / n
    mean_v = torch.ones(R, dtype=torch.float64, device=device)
    norm2_v = torch.ones(R, dtype=torch.float64, device=device)
    for f in F:
        mean_v = mean_v * f.mean(0)
        norm2_v = norm2_v * f.square().sum(0)
    cov = inner - n * mean_x * mean_v  # <Xc, vc> per component
    ssc_v = norm2_v - n * mean_v.square()  # ||vc||^2 per component
    evr = torch.where(ssc_v > 0, cov.square() / (ssc_x * ssc_v.clamp(min=1e-300)), torch.zeros_like(cov))
    evr_model = 1.0 - ssc_r / ssc_x if ssc_x > 0 else float("nan")
    rel_error = math.sqrt(max(ss_r, 0.0) / ss_x) if ss_x > 0 else float("nan")
    return Variance(evr.cpu().numpy(), float(evr_model), rel_error)


def order_by_evr(fit: CPFit, evr: np.ndarray) -> tuple[CPFit, np.ndarray, np.ndarray]:
    """Reorder the components by EVR, descending (stable for ties).

    Returns
    -------
    fit : CPFit
        A new fit with reordered weights and factor columns.
    evr : ndarray, shape (R,)
        EVRs in the new order.
    order : ndarray, int64, shape (R,)
        ``order[j]`` = index of the original component now at position j.
    """
    order = np.argsort(-np.asarray(evr), kind="stable")
    new = CPFit(
        fit.weights[order].copy(),
        [f[:, order].copy() for f in fit.factors],
        fit.errors,
        fit.engine,
        fit.method,
        fit.seconds,
    )
    return new, np.asarray(evr)[order], order.astype(np.int64)


# ----------------------------------------------------------------------------------
# undo the rearrangement
# ----------------------------------------------------------------------------------


def _undo_complex(rows: np.ndarray) -> np.ndarray:
    return (rows[0::2] + 1j * rows[1::2]).astype(np.complex64 if rows.dtype == np.float32 else np.complex128)


def unrearrange_factors(factors: Sequence[np.ndarray], layout: Layout) -> dict:
    """Map fitted factor matrices back onto the original axes.

    Parameters
    ----------
    factors : sequence of ndarray, shapes (I_n, R), in ``layout.dims`` order
    layout : Layout

    Returns
    -------
    dict
        ``points_x`` (N, R), ``points_y`` (N, R), ``frequency`` (F, R), and ``time``:
        an (T, R) array for one element or a stacked tensor, else a dict of
        key -> (T_k, R) split along the concatenated time axis. With a stacked axis,
        also ``layout.stack_dim`` (V, R). Complex-unfolded time factors come back
        complex (real rows + 1j * imaginary rows).
    """
    dims = list(layout.dims)
    if len(factors) != len(dims):
        raise TCAError(f"{len(factors)} factor matrices for axes {dims}")
    by = dict(zip(dims, factors))
    xy = by[XY_POINTS]
    N = layout.n_points
    if xy.shape[0] != 2 * N:
        raise TCAError(f"(xy points) factor has {xy.shape[0]} rows, expected 2N = {2 * N}")
    out = {"points_x": xy[:N], "points_y": xy[N:], "frequency": by["frequency"]}
    t = by["time"]
    mult = 2 if layout.complex_unfolded else 1
    undo = _undo_complex if layout.complex_unfolded else (lambda a: a)
    if layout.stack_dim is not None:
        out["time"] = undo(t)
        out[layout.stack_dim] = by[layout.stack_dim]
    elif len(layout.keys) == 1:
        out["time"] = undo(t)
    else:
        expected = sum(layout.n_time) * mult
        if t.shape[0] != expected:
            raise TCAError(f"time factor has {t.shape[0]} rows, expected {expected}")
        edges = np.cumsum([0] + [n * mult for n in layout.n_time])
        out["time"] = {k: undo(t[a:b]) for k, a, b in zip(layout.keys, edges[:-1], edges[1:])}
    return out


# ----------------------------------------------------------------------------------
# similarity and rank sweeps
# ----------------------------------------------------------------------------------


def factor_match_score(
    factors_a: Sequence[np.ndarray],
    factors_b: Sequence[np.ndarray],
    weights_a=None,
    weights_b=None,
    weight_penalty: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Factor match score between two CP models, best over component permutations.

    Each component's score is the product over axes of |cosine| between its factor
    columns, times ``1 - |l_a - l_b| / max(l_a, l_b)`` where l is the component's
    norm (weight times the product of column norms) when ``weight_penalty``
    (Acar et al. 2011; tensortools' ``kruskal_align``). Components are matched by the
    Hungarian algorithm on the cosine products.

    Returns
    -------
    score : float
        Mean over the matched components, in [0, 1].
    per_component : ndarray, shape (R,)
        Score of each component of ``a`` with its match.
    perm : ndarray, int, shape (R,)
        ``perm[r]``: the component of ``b`` matched to component r of ``a``.
    """
    from scipy.optimize import linear_sum_assignment

    if len(factors_a) != len(factors_b):
        raise TCAError("models have different numbers of axes")
    Ra, Rb = factors_a[0].shape[1], factors_b[0].shape[1]
    wa = np.ones(Ra) if weights_a is None else np.abs(np.asarray(weights_a, float))
    wb = np.ones(Rb) if weights_b is None else np.abs(np.asarray(weights_b, float))
    sim = np.ones((Ra, Rb))
    la, lb = wa.copy(), wb.copy()
    for fa, fb in zip(factors_a, factors_b):
        fa, fb = np.asarray(fa, float), np.asarray(fb, float)
        na, nb = np.linalg.norm(fa, axis=0), np.linalg.norm(fb, axis=0)
        la, lb = la * na, lb * nb
        sim *= np.abs((fa / np.where(na > 0, na, 1)).T @ (fb / np.where(nb > 0, nb, 1)))
    if weight_penalty:
        mx = np.maximum(la[:, None], lb[None, :])
        sim = sim * (1 - np.abs(la[:, None] - lb[None, :]) / np.where(mx > 0, mx, 1))
    rows, cols = linear_sum_assignment(-sim)
    per = np.zeros(Ra)
    perm = -np.ones(Ra, dtype=np.int64)
    per[rows] = sim[rows, cols]
    perm[rows] = cols
    return float(per.mean()), per, perm


def rank_sweep(tensor, ranks: Sequence[int], seeds: Sequence[int], **fit_kwargs) -> dict:
    """Fit every (rank, seed) pair and summarize error and stability across seeds.

    Parameters
    ----------
    tensor : ndarray or torch.Tensor
    ranks, seeds : sequences of int
    **fit_kwargs
        Passed to :func:`fit_cp` (not ``rank`` nor ``random_state``).

    Returns
    -------
    dict
        ``ranks`` (n_r,), ``seeds`` (n_s,), ``rel_error`` (n_r, n_s) final relative
        reconstruction error, ``evr_model`` (n_r, n_s), ``similarity`` (n_r, n_s):
        factor match score of each seed's model with the lowest-error model of the same
        rank (1 for that one itself), ``similarity_pairwise`` (n_r,): mean score over
        all seed pairs (NaN with one seed), ``seconds`` (n_r, n_s).
    """
    ranks = [int(r) for r in ranks]
    seeds = [int(s) for s in seeds]
    if not ranks or not seeds:
        raise TCAError("rank_sweep needs at least one rank and one seed")
    nr, ns = len(ranks), len(seeds)
    err = np.full((nr, ns), np.nan)
    evr = np.full((nr, ns), np.nan)
    secs = np.full((nr, ns), np.nan)
    sim = np.full((nr, ns), np.nan)
    pair = np.full(nr, np.nan)
    for i, r in enumerate(ranks):
        fits = []
        for j, s in enumerate(seeds):
            fit = fit_cp(tensor, rank=r, random_state=s, **fit_kwargs)
            var = explained_variance(tensor, fit.weights, fit.factors, device=fit_kwargs.get("device", "cpu"))
            err[i, j], evr[i, j], secs[i, j] = var.rel_error, var.evr_model, fit.seconds
            fits.append(fit)
            logger.info(
                "rank sweep: rank %d seed %d: error %.5g, EVR %.4f (%.1f s)",
                r,
                s,
                var.rel_error,
                var.evr_model,
                fit.seconds,
            )
        best = int(np.nanargmin(err[i]))
        for j, f in enumerate(fits):
            sim[i, j] = factor_match_score(fits[best].factors, f.factors, fits[best].weights, f.weights)[0]
        if ns > 1:
            pair[i] = np.mean(
                [
                    factor_match_score(fits[a].factors, fits[b].factors, fits[a].weights, fits[b].weights)[0]
                    for a in range(ns)
                    for b in range(a + 1, ns)
                ]
            )
    return {
        "ranks": np.asarray(ranks, np.int64),
        "seeds": np.asarray(seeds, np.int64),
        "rel_error": err,
        "evr_model": evr,
        "similarity": sim,
        "similarity_pairwise": pair,
        "seconds": secs,
    }


# ----------------------------------------------------------------------------------
# whole stage
# ----------------------------------------------------------------------------------


@dataclass
class Decomposition:
    """One fitted and ordered decomposition with its factors on the original axes."""

    name: str
    layout: Layout
    fit: CPFit
    evr: np.ndarray
    evr_model: float
    rel_error: float
    order: np.ndarray
    factors: dict
    normalization: dict
    sweep: dict | None = None


@dataclass
class TCAResult:
    """Everything the TCA stage writes."""

    decompositions: dict
    videos: str
    params: dict
    extra: dict = field(default_factory=dict)


_FIT_KEYS = (
    "method",
    "rank",
    "n_iter_max",
    "init",
    "tol",
    "random_state",
    "method_params",
    "backend",
    "device",
    "dtype",
    "engine",
    "log_every",
    "rel_tol",
    "nnls",
)
#: decompositions whose tensors x n_iter_max reach this use the numba NNLS kernel
_NUMBA_MIN_ITERATIONS = 2000


def decompose(
    data: Mapping[str, np.ndarray],
    *,
    videos: str = "separate",
    complex_unfold: bool = False,
    windows=None,
    mean_subtract: bool = False,
    std_divide: bool = True,
    normalize_dim: str = "time",
    epsilon: float = 1e-8,
    rank_sweep_ranks: Sequence[int] | None = None,
    rank_sweep_seeds: Sequence[int] = (0, 1, 2),
    element_dim: str = "video",
    overwrite_input: bool = False,
    **fit_kwargs,
) -> TCAResult:
    """Run the TCA stage on one set of spectrograms.

    Parameters
    ----------
    data : mapping of str -> ndarray, shape (2, N, F, T_k)
        Spectrograms per video key.
    videos, complex_unfold, windows, element_dim
        See :func:`rearrange_data`.
    mean_subtract, std_divide, normalize_dim, epsilon
        See :func:`normalize_tensor` (``normalize_dim`` is the ``dim`` there).
    rank_sweep_ranks, rank_sweep_seeds
        If ranks are given, also run :func:`rank_sweep` on each tensor.
    overwrite_input : bool
        Let the normalization overwrite the float arrays of ``data`` (``separate``
        tensors are views of them), so that no second tensor-sized array is made; for
        callers that loaded the spectrograms only for this (the workflow). Tensors that
        the rearrangement copied anyway are always normalized in place.
    **fit_kwargs
        :func:`fit_cp` arguments: method, rank, n_iter_max, init, tol, rel_tol, random_state,
        method_params, backend, device, dtype, engine, log_every, nnls (``auto`` here
        also picks numba when the tensors x n_iter_max reach 2000, e.g. 10 videos).

    Returns
    -------
    TCAResult
        One :class:`Decomposition` per tensor (per video key for ``separate``, one
        named ``"all"`` otherwise), components in descending EVR order.
    """
    unknown = set(fit_kwargs) - set(_FIT_KEYS)
    if unknown:
        raise TCAError(f"unknown TCA parameters {sorted(unknown)}")
    re = rearrange_data(data, videos=videos, complex_unfold=complex_unfold, windows=windows, element_dim=element_dim)
    if fit_kwargs.get("nnls", "auto") == "auto" and (
        len(re.tensors) * int(fit_kwargs.get("n_iter_max", 200)) >= _NUMBA_MIN_ITERATIONS
    ):
        # many fits (e.g. 40 short trials): numba's ~1 s of set-up per process is
        # repaid by ~1.5 ms per HALS iteration; a few small fits stay on numpy
        fit_kwargs["nnls"] = "numba"
    out = {}
    inputs = [a for a in data.values() if isinstance(a, np.ndarray)]
    for name in list(re.tensors):
        tensor = re.tensors.pop(name)  # the fitted tensor is not kept past its fit
        layout = re.layouts[name]
        owned = (
            tensor.dtype.kind == "f"
            and tensor.flags.writeable
            and (overwrite_input or not any(np.may_share_memory(tensor, a) for a in inputs))
        )
        tensor, norm_info = normalize_tensor(
            tensor, layout.dims, mean_subtract, std_divide, normalize_dim, epsilon, out=tensor if owned else None
        )
        logger.info(
            "TCA %r: tensor %s %s, %s",
            name,
            tuple(tensor.shape),
            list(layout.dims),
            fit_kwargs.get("method", "CP_NN_HALS"),
        )
        fit = fit_cp(tensor, **fit_kwargs)
        device = fit_kwargs.get("device", "cpu")
        with _threads_for(tensor) if device == "cpu" else contextlib.nullcontext():
            var = explained_variance(tensor, fit.weights, fit.factors, device=device)
        fit, evr, order = order_by_evr(fit, var.evr)
        logger.info(
            "TCA %r: %s engine, %d iterations, %.1f s; relative error %.5g, model EVR %.4f",
            name,
            fit.engine,
            len(fit.errors),
            fit.seconds,
            var.rel_error,
            var.evr_model,
        )
        sweep = None
        if rank_sweep_ranks:
            kw = {k: v for k, v in fit_kwargs.items() if k not in ("rank", "random_state")}
            sweep = rank_sweep(tensor, rank_sweep_ranks, rank_sweep_seeds, **kw)
        out[name] = Decomposition(
            name,
            layout,
            fit,
            evr,
            var.evr_model,
            var.rel_error,
            order,
            unrearrange_factors(fit.factors, layout),
            norm_info,
            sweep,
        )
    params = dict(
        videos=videos,
        complex_unfold=complex_unfold,
        windows=windows,
        mean_subtract=mean_subtract,
        std_divide=std_divide,
        normalize_dim=normalize_dim,
        epsilon=epsilon,
        **fit_kwargs,
    )
    return TCAResult(out, videos, params)


def decompose_joint(
    sessions: Mapping[str, Mapping[str, np.ndarray]], *, mode: str = "concatenate", **kwargs
) -> TCAResult:
    """Joint TCA over several sessions that share one point set.

    Parameters
    ----------
    sessions : mapping of session id -> (mapping of video key -> (2, N, F, T_k))
        In group order.
    mode : {"concatenate", "stack"}
        ``concatenate`` (the reference's dict-element concatenation): every
        (session, video) element is joined along time; the time factor is split back
        per session and video (keys ``"session/video"``). ``stack``: each session's
        videos are joined along time, then sessions are stacked on a leading
        ``session`` axis (equal lengths needed), giving a session factor (S, R).
    **kwargs
        As :func:`decompose` (``videos`` and ``element_dim`` are set here).

    Raises
    ------
    TCAError
        When sessions differ in N (points) or F (frequencies): joint TCA needs
        sessions tracked on one point set, e.g. ROIs transferred between sessions.
    """
    if mode not in ("concatenate", "stack"):
        raise TCAError(f"joint mode must be 'concatenate' or 'stack', got {mode!r}")
    if len(sessions) < 1:
        raise TCAError("joint TCA needs at least one session")
    shapes = {}
    for sid, d in sessions.items():
        if "/" in str(sid):
            raise TCAError(f"session id {sid!r} contains '/', which joint keys reserve")
        if not d:
            raise TCAError(f"session {sid!r} has no spectrograms")
        s = {tuple(np.shape(a)[1:3]) for a in d.values()}
        if len(s) != 1:
            raise TCAError(f"session {sid!r} has videos with different (points, frequency) shapes {sorted(s)}")
        shapes[sid] = s.pop()
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k}: N={v[0]}, F={v[1]}" for k, v in shapes.items())
        raise TCAError(
            "joint TCA needs sessions that share one point set and one filter bank "
            f"(same N points and F frequencies), but got {desc}. Track every session of "
            "the group with the same seed points (e.g. one ROI file, or ROIs transferred "
            "between sessions) and the same spectrogram settings, or run per-session TCA."
        )
    if mode == "concatenate":
        flat = {f"{sid}/{k}": a for sid, d in sessions.items() for k, a in d.items()}
        return decompose(flat, videos="concatenate", element_dim="session", **kwargs)
    windows = kwargs.pop("windows", None)
    if windows is not None:
        raise TCAError("time windows are not supported with joint mode 'stack'")
    joined = {}
    for sid, d in sessions.items():
        arrs = list(d.values())
        joined[sid] = np.concatenate(arrs, axis=-1) if len(arrs) > 1 else arrs[0]
    res = decompose(joined, videos="stack", element_dim="session", **kwargs)
    res.extra["videos_per_session"] = {
        sid: {k: int(np.shape(a)[-1]) for k, a in d.items()} for sid, d in sessions.items()
    }
    return res


# ----------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------


def _natural(keys):
    import re

    return sorted(keys, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


@dataclass
class Spectrograms:
    """Contents of a spectrograms.h5 file that TCA needs."""

    spectrograms: dict
    frequencies: np.ndarray
    point_positions: np.ndarray
    times: dict
    fs: float | None
    session_times: dict = field(default_factory=dict)
    gap_fraction: dict = field(default_factory=dict)


def load_spectrograms(path: str | Path) -> Spectrograms:
    """Read ``spectrograms/{i}``, ``frequencies``, ``point_positions``, ``times/{i}``."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise TCAError(f"spectrogram file {path} does not exist; run the spectrogram rule")
    with h5py.File(path, "r") as f:
        if "spectrograms" not in f or not len(f["spectrograms"]):
            raise TCAError(f"{path} has no spectrograms/ group; was it written by the spectrogram stage?")
        keys = _natural(list(f["spectrograms"].keys()))
        spec = {k: f["spectrograms"][k][()] for k in keys}
        freqs = (
            f["frequencies"][()]
            if "frequencies" in f
            else np.arange(next(iter(spec.values())).shape[2], dtype=np.float32)
        )
        pts = f["point_positions"][()] if "point_positions" in f else np.zeros((0, 2), np.float32)
        axes = {
            name: {k: f[name][k][()] for k in keys if k in f[name]} if name in f else {}
            for name in ("times", "session_times", "gap_fraction")
        }
        fs = float(f.attrs["fs"]) if "fs" in f.attrs else None
    return Spectrograms(spec, freqs, pts, axes["times"], fs, axes["session_times"], axes["gap_fraction"])


def _window_times(t: np.ndarray, w) -> np.ndarray:
    return t if w is None else t[w[0] : w[1] + 1]


def write_tca_h5(
    h5,
    result: TCAResult,
    frequencies=None,
    times: Mapping | None = None,
    point_positions: Mapping | np.ndarray | None = None,
    time_axes: Mapping[str, Mapping] | None = None,
) -> None:
    """Write a :class:`TCAResult` into an open h5py File (layout in ``docs/tca.md``).

    Parameters
    ----------
    h5 : h5py.File
    result : TCAResult
    frequencies : ndarray (F,), optional
    times : mapping of element key -> (T_k,) seconds, optional
        Keys as in the layouts (``"0"`` or ``"session/0"``); windows are applied here.
    point_positions : ndarray (N, 2), or mapping session -> (N, 2), optional
    time_axes : mapping of name -> (mapping of element key -> (T_k,)), optional
        More per-time-bin axes written like ``times`` as ``{name}/{key}``, e.g.
        ``session_times`` (s, session clock) and ``gap_fraction``.
    """
    import h5py

    str_dt = h5py.string_dtype()
    h5.attrs["videos"] = result.videos
    h5.attrs["n_decompositions"] = len(result.decompositions)
    h5.create_dataset("decomposition_names", data=list(result.decompositions), dtype=str_dt)
    if frequencies is not None:
        h5.create_dataset("frequencies", data=np.asarray(frequencies))
    if point_positions is not None:
        if isinstance(point_positions, Mapping):
            for sid, p in point_positions.items():
                h5.create_dataset(f"point_positions/{sid}", data=np.asarray(p, np.float32))
        else:
            h5.create_dataset("point_positions", data=np.asarray(point_positions, np.float32))
    for name, d in result.decompositions.items():
        g = h5.create_group(f"decompositions/{name}")
        lay = d.layout
        g.attrs["dims"] = list(lay.dims)
        g.attrs["keys"] = list(lay.keys)
        g.attrs["n_time"] = np.asarray(lay.n_time, np.int64)
        g.attrs["n_points"] = lay.n_points
        g.attrs["complex_unfolded"] = lay.complex_unfolded
        g.attrs["windows"] = np.asarray(
            [[-1, -1] if w is None else list(w) for w in (lay.windows or [None] * len(lay.keys))], np.int64
        )
        g.attrs["rank"] = d.fit.rank
        g.attrs["method"] = d.fit.method
        g.attrs["engine"] = d.fit.engine
        g.attrs["seconds"] = d.fit.seconds
        g.attrs["n_iter"] = len(d.fit.errors)
        g.attrs["evr_model"] = d.evr_model
        g.attrs["rel_error"] = d.rel_error
        for k, v in d.normalization.items():
            g.attrs[f"normalization_{k}"] = v
        g.create_dataset("weights", data=d.fit.weights)
        g.create_dataset("evr", data=d.evr)
        g.create_dataset("evr_model", data=d.evr_model)
        g.create_dataset("errors", data=d.fit.errors)
        g.create_dataset("order", data=d.order)
        for i, (dim, f) in enumerate(zip(lay.dims, d.fit.factors)):
            ds = g.create_dataset(f"fitted/{i}", data=f.astype(np.float32))
            ds.attrs["axis"] = dim
        for axis, f in d.factors.items():
            if isinstance(f, Mapping):
                for key, a in f.items():
                    ds = g.create_dataset(f"factors/{axis}/{key}", data=_store(a))
                    ds.attrs["axis"] = axis
                    ds.attrs["key"] = key
            else:
                ds = g.create_dataset(f"factors/{axis}", data=_store(f))
                ds.attrs["axis"] = axis
        if lay.stack_dim is not None:
            g.create_dataset(f"{lay.stack_dim}_names", data=list(lay.keys), dtype=str_dt)
        for axis_name, axis in {"times": times or {}, **(time_axes or {})}.items():
            for key, w in zip(lay.keys, lay.windows or [None] * len(lay.keys)):
                if key in axis:
                    dtype = np.float32 if axis_name == "gap_fraction" else np.float64
                    g.create_dataset(f"{axis_name}/{key}", data=_window_times(np.asarray(axis[key], dtype), w))
        if len(lay.keys) > 1 and lay.stack_dim is None:
            # where each element (video, or session/video) sits on the fitted time axis
            mult = 2 if lay.complex_unfolded else 1
            edges = np.cumsum([0] + [n * mult for n in lay.n_time])
            g.create_dataset("time_split/key", data=list(lay.keys), dtype=str_dt)
            g.create_dataset("time_split/start", data=edges[:-1].astype(np.int64))
            g.create_dataset("time_split/stop", data=edges[1:].astype(np.int64))
            if all("/" in k for k in lay.keys):
                g.create_dataset("time_split/session", dtype=str_dt, data=[k.split("/", 1)[0] for k in lay.keys])
        if d.sweep is not None:
            s = h5.create_group(f"rank_sweep/{name}")
            for k, v in d.sweep.items():
                s.create_dataset(k, data=v)


def _store(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.complex64) if np.iscomplexobj(a) else a.astype(np.float32)


def read_tca_h5(path: str | Path) -> dict:
    """Read a tca.h5 back into nested dicts (one entry per decomposition name).

    Returns
    -------
    dict
        ``{name: {"factors": {axis: array or {key: array}}, "weights", "evr",
        "evr_model", "errors", "order", "attrs": {...}, "times": {...},
        "rank_sweep": {...} or None}}`` plus top-level ``"frequencies"`` when stored.
    """
    import h5py

    def tree(g):
        return {k: tree(v) if isinstance(v, h5py.Group) else v[()] for k, v in g.items()}

    out = {}
    with h5py.File(path, "r") as f:
        for name in f["decompositions"]:
            g = f["decompositions"][name]
            out[name] = {
                "factors": tree(g["factors"]),
                "fitted": [g["fitted"][str(i)][()] for i in range(len(g["fitted"]))],
                "weights": g["weights"][()],
                "evr": g["evr"][()],
                "evr_model": float(g["evr_model"][()]),
                "errors": g["errors"][()],
                "order": g["order"][()],
                "attrs": dict(g.attrs),
                "times": tree(g["times"]) if "times" in g else {},
                "session_times": tree(g["session_times"]) if "session_times" in g else {},
                "gap_fraction": tree(g["gap_fraction"]) if "gap_fraction" in g else {},
                "time_split": tree(g["time_split"]) if "time_split" in g else None,
                "rank_sweep": (tree(f["rank_sweep"][name]) if "rank_sweep" in f and name in f["rank_sweep"] else None),
            }
        if "frequencies" in f:
            out["frequencies"] = f["frequencies"][()]
    return out


def options_from_config(cfg: Mapping, device: str) -> dict:
    """Keyword arguments of :func:`decompose` / :func:`decompose_joint` from the config's
    ``tca`` section (everything but the per-session ``videos``/``windows`` choice)."""
    sweep = cfg.get("rank_sweep") or {}
    return dict(
        complex_unfold=cfg.get("complex_unfold", False),
        mean_subtract=cfg["mean_subtract"],
        std_divide=cfg["std_divide"],
        normalize_dim=cfg["normalize_dim"],
        epsilon=cfg["epsilon"],
        rank_sweep_ranks=sweep.get("ranks") if sweep.get("enabled") else None,
        rank_sweep_seeds=sweep.get("seeds", [0, 1, 2]),
        method=cfg["method"],
        rank=cfg["rank"],
        n_iter_max=cfg["n_iter_max"],
        init=cfg["init"],
        tol=cfg["tol"],
        rel_tol=cfg.get("rel_tol", 0.0),
        random_state=cfg["random_state"],
        method_params=cfg.get("method_params"),
        backend=cfg["backend"],
        device=device,
        engine=cfg.get("engine", "auto"),
        dtype=cfg.get("dtype", "float32"),
        log_every=25,
    )
