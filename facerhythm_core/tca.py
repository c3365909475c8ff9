"""Tensor component analysis (TCA): non-negative CP decomposition of spectrograms.

Re-implements the reference's ``decomposition.TCA`` (face-rhythm 0.3.3) as pure
functions, one module per step:

1. :mod:`.tca_tensor`: :func:`rearrange_data` folds ``(xy, points)`` into one axis,
   optionally unfolds complex values into time, cuts time windows and handles several
   videos (``separate`` / ``concatenate`` / ``stack``); :func:`normalize_tensor`
   centres and/or scales along a named axis, with an epsilon (the reference divides by
   zero).
2. :mod:`.tca_fit`: :func:`fit_cp` fits a CP model. ``CP_NN_HALS`` runs on a torch
   re-implementation of tensorly's HALS (:mod:`.hals`: same init, same update rule,
   same 5 inner sweeps and inner stopping rule) that avoids tensorly's per-mode
   unfolding copies; every method can also run through tensorly itself, inside
   ``tl.backend_context`` so that no backend change leaks.
3. :mod:`.tca_metrics`: :func:`explained_variance` / :func:`order_by_evr` rank the
   components by explained variance ratio without touching the caller's data (the
   reference mean-centres it in place); factor match scores and rank sweeps.
4. :mod:`.tca_tensor`: :func:`unrearrange_factors` maps the fitted factor matrices back
   to the original axes: points x, points y, frequency, time per video, and
   video/session.

This module chains the steps (:func:`decompose`, :func:`decompose_joint`, the TCA
stage's entry points) and is where callers find them with the files' readers and
writer (:mod:`.tca_h5`: :func:`load_spectrograms`, :func:`write_tca_h5`,
:func:`read_tca_h5`; layout in ``docs/tca.md``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import TCAError
from .tca_fit import CPFit, fit_cp, threads_for
from .tca_h5 import Spectrograms, load_spectrograms, read_tca_h5, write_tca_h5
from .tca_metrics import explained_variance, order_by_evr, rank_sweep
from .tca_tensor import Layout, normalize_tensor, rearrange_data, unrearrange_factors

__all__ = [
    "Decomposition",
    "Spectrograms",
    "TCAResult",
    "decompose",
    "decompose_joint",
    "load_spectrograms",
    "options_from_config",
    "read_tca_h5",
    "write_tca_h5",
]

logger = logging.getLogger(__name__)


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
        with threads_for(tensor) if device == "cpu" else contextlib.nullcontext():
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
