"""Fitting a CP model with the reference's methods (tensorly's classes), on our HALS
engines (:mod:`.hals`, numpy or torch) where they reproduce tensorly's CP_NN_HALS, on
tensorly otherwise; small CPU tensors run on one thread."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import TCAError
from .runtime import numpy_blas_threads
from .hals import hals_cp_numpy, hals_cp_torch, initial_factors, initial_factors_numpy

logger = logging.getLogger(__name__)

#: CP methods (tensorly class names)
METHODS = ("CP_NN_HALS", "CP", "RandomizedCP", "ConstrainedCP")

# keyword arguments of tensorly's CP_NN_HALS that our HALS engines reproduce, with
# the only values it supports (None = any value)
_HALS_PARAMS = {
    "svd": None,
    "verbose": None,
    "cvg_criterion": None,
    "normalize_factors": (False,),
    "exact": (False,),
    "nn_modes": ("all",),
    "fixed_modes": (None, (), []),
    "sparsity_coefficients": (None,),
}


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


def _check_method_params(method: str, params: Mapping) -> None:
    if method == "RandomizedCP" and "n_samples" not in params:
        raise TCAError(
            "RandomizedCP needs method_params.n_samples (the number of sampled fibres per iteration, e.g. 1000)"
        )


def _hals_params_ok(params: Mapping) -> str | None:
    """None if our HALS engines reproduce these CP_NN_HALS kwargs, else why not."""
    for k, v in params.items():
        if k not in _HALS_PARAMS:
            return f"method_params.{k}"
        allowed = _HALS_PARAMS[k]
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
    engine : {"auto", "numpy", "torch", "tensorly"}
        Our HALS (:mod:`.hals`) reproduces tensorly's CP_NN_HALS when ``method_params``
        allow it: ``numpy`` runs it with numpy on the CPU (random init only), ``torch``
        with torch on any device; ``auto`` picks numpy for CPU tensors below
        :data:`NUMPY_MAX_ELEMENTS` elements with a random init (no torch import, ~1 s
        a job), torch for the rest, and tensorly where our HALS cannot reproduce the
        parameters. ``numpy`` and ``torch`` insist (error if impossible).
    log_every : int
        Log progress every this many iterations (our HALS).
    rel_tol : float
        Our HALS: also stop once an iteration improves the relative error by less
        than ``rel_tol`` times the error (0 = only tensorly's ``tol`` test; the config
        default is 1e-6, see docs/tca.md). tensorly's engines ignore it.
    nnls : {"auto", "numpy", "numba"}
        Our HALS on the CPU: how the inner NNLS sweeps run (:func:`.hals.hals_nnls`).
        ``auto``: numba for tensors of 2**24 elements or more, numpy below.

    Returns
    -------
    CPFit
    """
    if method not in METHODS:
        raise TCAError(f"method must be one of {METHODS}, got {method!r}")
    if engine not in ENGINES:
        raise TCAError(f"engine must be one of {ENGINES}, got {engine!r}")
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
    if tensor.is_complex() if hasattr(tensor, "is_complex") else np.iscomplexobj(tensor):
        raise TCAError("CP here needs a real tensor; take magnitudes or use complex_unfold")
    use = _choose_engine(engine, method, params, device, init, random_state, int(np.prod(shape)))
    hals = dict(
        n_iter_max=int(n_iter_max),
        tol=float(tol),
        cvg_criterion=params.get("cvg_criterion", "abs_rec_error"),
        log_every=log_every,
        rel_tol=float(rel_tol),
        nnls=nnls,
    )
    if use == "numpy":
        X = (tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)).astype(
            dtype, copy=False
        )
        _check_values(X, method)
        with threads_for(X):
            t0 = time.perf_counter()
            factors = [np.abs(f).astype(X.dtype) for f in initial_factors_numpy(X.shape, int(rank), random_state)]
            factors, errors = hals_cp_numpy(X, factors, **hals)
            return _hals_fit(factors, errors, "numpy", method, time.perf_counter() - t0)
    import torch

    tdtype = getattr(torch, dtype)
    if backend == "numpy" and use == "tensorly" and device != "cpu":
        logger.warning("tensorly's numpy backend runs on the CPU; ignoring device %s", device)
        device = "cpu"
    X = torch.as_tensor(tensor).to(device=device, dtype=tdtype)
    _check_values(X, method)
    with threads_for(X):
        t0 = time.perf_counter()
        if use == "torch":
            init_factors = initial_factors(X, int(rank), init, params.get("svd", "truncated_svd"), random_state)
            factors, errors = hals_cp_torch(X, init_factors, **hals)
            factors = [f.detach().double().cpu().numpy() for f in factors]
            return _hals_fit(factors, errors, "torch", method, time.perf_counter() - t0)
        return _fit_tensorly(X, method, rank, n_iter_max, init, tol, random_state, params, backend, t0)


#: tensors up to this many elements run on the numpy HALS engine on the CPU (``auto``);
#: larger ones, where torch's ~1 s import no longer counts, on the torch engine, whose
#: memory use on hour-long sessions is measured (BENCHMARKS.md)
NUMPY_MAX_ELEMENTS = 1 << 24

#: ``engine`` values
ENGINES = ("auto", "numpy", "torch", "tensorly")


def _choose_engine(engine, method, params, device, init, random_state, size) -> str:
    """``"numpy"``, ``"torch"`` or ``"tensorly"`` for these arguments (see :func:`fit_cp`)."""
    if engine == "tensorly":
        return "tensorly"
    if method != "CP_NN_HALS":
        if engine != "auto":
            raise TCAError(f"the {engine} engine implements CP_NN_HALS only, not {method}")
        return "tensorly"
    why = _hals_params_ok(params)
    if why is not None:
        if engine != "auto":
            raise TCAError(
                f"the {engine} HALS engine does not support {why}; use engine 'tensorly' or drop that parameter"
            )
        logger.info("using tensorly's CP_NN_HALS because of %s", why)
        return "tensorly"
    numpy_ok = init == "random" and (random_state is None or isinstance(random_state, (int, np.integer)))
    if engine == "numpy":
        if str(device) != "cpu":
            raise TCAError(
                f"the numpy engine runs on the CPU; set tca.device to cpu or tca.engine to torch (device {device})"
            )
        if not numpy_ok:
            raise TCAError(
                "the numpy engine takes init 'random' with an integer or null random_state; use engine 'torch'"
            )
        return "numpy"
    if engine == "auto" and str(device) == "cpu" and numpy_ok and size <= NUMPY_MAX_ELEMENTS:
        return "numpy"
    return "torch"


def _check_values(X, method: str) -> None:
    if not _all_finite(X):
        raise TCAError(
            "the tensor holds NaN or inf values; check the spectrograms (e.g. normalization of constant fibres)"
        )
    if method in ("CP_NN_HALS",) and float(X.min()) < 0:
        logger.warning(
            "the tensor has negative values (e.g. after mean subtraction); "
            "non-negative CP fits only its positive part well"
        )


def _hals_fit(factors, errors, engine: str, method: str, seconds: float) -> CPFit:
    rank = factors[0].shape[1]
    factors = [np.asarray(f, dtype=np.float64) for f in factors]
    return CPFit(np.ones(rank), factors, np.asarray(errors, dtype=np.float64), engine, method, seconds)


def _fit_tensorly(X, method, rank, n_iter_max, init, tol, random_state, params, backend, t0) -> CPFit:
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
    errors = np.asarray([float(_to_numpy(e)) for e in errors], dtype=np.float64)
    return CPFit(weights, factors, errors, "tensorly", method, time.perf_counter() - t0)


#: CPU tensors below this many elements are fitted on one thread (see threads_for)
_ONE_THREAD_MAX_ELEMENTS = 1 << 22


class threads_for:
    """Run a CPU fit of a small tensor on one thread (torch's and numpy's BLAS), then
    restore the counts.

    A HALS iteration on a short trial's tensor (e.g. 690 x 36 x 26) is ~50 small
    operations of well under a millisecond; splitting each over threads costs more
    than it saves, and on a busy machine, where the second thread waits for a core,
    it made such fits up to 10x slower (measured: a (24840, 26) @ (26, 10) product
    took 17 ms on 2 threads under load, 1.2 ms on one). torch is limited only if
    something loaded it."""

    def __init__(self, X):
        on_cpu = isinstance(X, np.ndarray) or X.device.type == "cpu"
        self.one = on_cpu and int(np.prod(X.shape)) < _ONE_THREAD_MAX_ELEMENTS
        self.torch_before = self.blas_before = None

    def __enter__(self):
        if not self.one:
            return self
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() > 1:
            self.torch_before = torch.get_num_threads()
            torch.set_num_threads(1)
        n = numpy_blas_threads()
        if n is not None and n > 1:
            self.blas_before = n
            numpy_blas_threads(1)
        return self

    def __exit__(self, *exc):
        if self.torch_before is not None:
            sys.modules["torch"].set_num_threads(self.torch_before)
        if self.blas_before is not None:
            numpy_blas_threads(self.blas_before)


def _all_finite(X, block_elements: int = 1 << 24) -> bool:
    """``isfinite(X).all()`` in blocks (no bool copy of the whole tensor)."""
    flat = X.reshape(-1)
    if isinstance(flat, np.ndarray):
        return all(bool(np.isfinite(flat[i : i + block_elements]).all()) for i in range(0, flat.size, block_elements))
    import torch

    return all(bool(torch.isfinite(flat[i : i + block_elements]).all()) for i in range(0, flat.numel(), block_elements))


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
