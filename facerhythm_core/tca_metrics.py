"""How good and how stable a CP model is: explained variance per component and of the
model, ordering by it, the factor match score between two models, and rank sweeps
over seeds."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import TCAError
from .hals import khatri_rao
from .tca_fit import CPFit, fit_cp

logger = logging.getLogger(__name__)


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
    shape = tuple(tensor.shape)
    if len(factors) != len(shape) or any(f.shape[0] != s for f, s in zip(factors, shape)):
        raise TCAError(f"factor shapes {[f.shape for f in factors]} do not match tensor shape {shape}")
    F = [np.asarray(f, dtype=np.float64) for f in factors]
    w = np.asarray(weights, dtype=np.float64)
    R = w.shape[0]
    # X as (P, K), K = last axis; KR of the other factors is only (P, R)
    kr = khatri_rao(F[:-1]) if len(F) > 1 else np.ones((1, R))
    rows = max(1, int(chunk_bytes // (8 * shape[-1] * 3)))
    if str(device) == "cpu":  # numpy: a CPU job need not import torch for this
        X = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
        inner, s_x, ss_x, s_r, ss_r = _chunk_sums_numpy(X.reshape(-1, shape[-1]), kr, F[-1], w, rows)
    else:
        inner, s_x, ss_x, s_r, ss_r = _chunk_sums_torch(tensor, shape, kr, F[-1], w, rows, device)
    n = float(np.prod(shape))
    ssc_x = ss_x - s_x * s_x / n
    ssc_r = ss_r - s_r * s_r / n
    mean_x = s_x / n
    mean_v = np.prod([f.mean(0) for f in F], axis=0)
    norm2_v = np.prod([np.square(f).sum(0) for f in F], axis=0)
    cov = inner - n * mean_x * mean_v  # <Xc, vc> per component
    ssc_v = norm2_v - n * np.square(mean_v)  # ||vc||^2 per component
    with np.errstate(divide="ignore", invalid="ignore"):
        evr = np.where(ssc_v > 0, np.square(cov) / (ssc_x * np.maximum(ssc_v, 1e-300)), 0.0)
    evr_model = 1.0 - ssc_r / ssc_x if ssc_x > 0 else float("nan")
    rel_error = math.sqrt(max(ss_r, 0.0) / ss_x) if ss_x > 0 else float("nan")
    return Variance(evr, float(evr_model), rel_error)


def _chunk_sums_numpy(X2: np.ndarray, kr, C, w, rows: int):
    """<X, component r> (R,), sum and sum of squares of X and of X - X_hat, in float64,
    ``rows`` rows of X2 (P, K) at a time."""
    inner = np.zeros(w.shape[0])
    s_x = ss_x = s_r = ss_r = 0.0
    for i in range(0, X2.shape[0], rows):
        xc = X2[i : i + rows].astype(np.float64)
        a = kr[i : i + rows]
        inner += (a * (xc @ C)).sum(0)
        resid = xc - (a * w) @ C.T
        s_x += float(xc.sum())
        ss_x += float(np.vdot(xc, xc))
        s_r += float(resid.sum())
        ss_r += float(np.vdot(resid, resid))
    return inner, s_x, ss_x, s_r, ss_r


def _chunk_sums_torch(tensor, shape, kr, C, w, rows: int, device):
    """:func:`_chunk_sums_numpy` on a torch device (the tensor stays there)."""
    import torch

    X2 = torch.as_tensor(tensor, device=device).reshape(-1, shape[-1])
    kr, C, w = (torch.as_tensor(a, device=device) for a in (kr, C, w))
    inner = torch.zeros(w.shape[0], dtype=torch.float64, device=device)
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
    return inner.cpu().numpy(), s_x, ss_x, s_r, ss_r


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
