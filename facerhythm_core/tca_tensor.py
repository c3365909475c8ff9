"""The tensors TCA fits, and the way back: spectrograms -> tensors -> factors per axis.

:func:`rearrange_data` folds ``(xy, points)`` into one axis (x rows first, then y
rows), optionally unfolds complex values into the time axis, cuts time windows and
handles several videos (``separate`` / ``concatenate`` / ``stack``);
:func:`normalize_tensor` subtracts the mean and/or divides by the std along a named
axis, with an epsilon (the reference divides by zero); :func:`unrearrange_factors`
maps fitted factor matrices back onto points x, points y, frequency, time per video
and video/session. A :class:`Layout` records how one tensor was built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import TCAError

logger = logging.getLogger(__name__)

#: name of the folded (xy, points) axis, as the reference names it
XY_POINTS = "(xy points)"
#: how several videos (dict elements) enter the decomposition
VIDEO_MODES = ("separate", "concatenate", "stack")
#: name of the single decomposition made by ``concatenate`` and ``stack``
ALL = "all"


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
    n_points = _check_spectrograms(keys, arrays, videos, complex_unfold)
    win = _windows_by_key(windows, keys)
    pieces, n_time, wins = [], [], []
    for k, a in zip(keys, arrays):
        w = _as_window(win[k], a.shape[3], k)
        piece, n = _fold(a, w, complex_unfold)
        pieces.append(piece)
        n_time.append(n)
        wins.append(w)

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


def _check_spectrograms(keys: list, arrays: list, videos: str, complex_unfold: bool) -> int:
    """Check each (2, N, F, T) spectrogram against the options and, unless ``separate``,
    against the first one's (N, F); return the first one's N."""
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
    return n_points


def _windows_by_key(windows, keys: list) -> dict:
    """The ``windows`` argument of :func:`rearrange_data` as {key: pair or None}."""
    if windows is None or (
        isinstance(windows, Sequence)
        and len(windows) == 2
        and not isinstance(windows[0], (Sequence, np.ndarray))
        and windows[0] is not None
    ):
        return {k: windows for k in keys}
    if isinstance(windows, Mapping):
        unknown = set(map(str, windows)) - set(keys)
        if unknown:
            raise TCAError(f"time windows name unknown keys {sorted(unknown)}; keys are {keys}")
        return {k: windows.get(k) for k in keys}
    # a sequence of windows in key order, like the reference's idx_windows
    if len(windows) != len(keys):
        raise TCAError(f"{len(windows)} time windows for {len(keys)} keys {keys}")
    return dict(zip(keys, windows))


def _fold(a: np.ndarray, w, complex_unfold: bool) -> tuple[np.ndarray, int]:
    """One (2, N, F, T) spectrogram cut to window ``w`` as a (2N, F, T') tensor
    (T' = 2T when complex-unfolded), and its T after windowing."""
    if w is not None:
        a = a[..., w[0] : w[1] + 1]
    n = a.shape[3]
    # (2, N, F, T) -> (2N, F, T): x rows first, then y rows (xy is the outer index)
    a = a.reshape(2 * a.shape[1], a.shape[2], a.shape[3])
    if complex_unfold:
        # (2N, F, T) complex -> (2N, F, T, 2) -> (2N, F, 2T): re, im, re, im, ...
        a = np.stack([a.real, a.imag], axis=-1).reshape(a.shape[0], a.shape[1], -1)
    return a, n


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
