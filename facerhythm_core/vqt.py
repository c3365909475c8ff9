"""Variable-Q transform (VQT): a memory-bounded transform with a filter bank.

Re-implements the spectral kernel of face-rhythm 0.3.3 (``vqt`` 0.1.3, see
``docs/spectrogram.md``). The filters (:mod:`facerhythm_core.vqt_filters`) are
convolved with every row, the output is cropped ('valid' or 'same') and block averaged
by ``downsample_factor`` with the last partial block averaged over the samples it has
(``avg_pool1d(ceil_mode=True)``). Rows go through in blocks of output time, so memory
does not grow with the signal length. This module plans a transform (:func:`plan_vqt`)
and knows the output's geometry; the loops are in :mod:`facerhythm_core.vqt_engines`.

Engines: 'fft' (overlap-save, the CPU default of :func:`plan_vqt`), 'numpy' (the same
blocks in numpy, so that a CPU job need not import torch), 'numba' (the same blocks,
the inverse FFTs, magnitudes and block sums fused in one compiled loop;
:mod:`facerhythm_core.vqt_numba`) and 'direct' (strided ``conv1d``) give the same
numbers up to float32 rounding; 'baseband' (opt-in) evaluates each filter at a
reduced rate from a cropped band of its spectrum, faster but approximate (stated
tolerance in docs/spectrogram.md). A session's engine is chosen in
:func:`facerhythm_core.spectrogram.session_engine`.

Deliberate difference from the reference (can be switched back for comparison):
complex output is block-averaged as complex numbers (``complex_pooling="mean"``); the
reference averages magnitude and raw phase angle separately ("polar"), which breaks at
the +-pi wrap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from . import vqt_engines as engines
from .errors import ConfigError, SpectrogramError
from .vqt_filters import FilterBank

logger = logging.getLogger(__name__)

PADDINGS = ("valid", "same")
ENGINES = ("auto", "direct", "fft", "numpy", "numba", "baseband")
#: the engines that run in numpy arrays on the CPU, without torch
HOST_ENGINES = ("numpy", "numba")
COMPLEX_POOLINGS = ("mean", "polar")


def _overlap_save_size(W: int, ds: int, n_blocks: int) -> int:
    """FFT length N of the 'fft' engine: the power of two with the least modelled work.

    A block of N samples yields (N - W + 1) // ds complete output bins; the work is
    modelled as (blocks needed) * N log2 N. Powers of two only: on the 2-core EPYC VM
    torch's (MKL) irfft took 0.52-0.6 ns per sample at N = 1024 and 4096 against
    0.66-0.74 at 1080 and 1.2-1.6 at 4374 (the former next_fast_len choices for a
    1000-frame trial and for long signals, W = 481, ds = 20). Capped near 8 W, where
    the irfft outputs stop fitting the caches (8192 measured slower than 4096).
    """
    n_blocks = max(1, int(n_blocks))
    smallest = 1 << (W - 1 + ds - 1).bit_length()  # room for one output bin
    cap = max(smallest, 2048, 1 << (8 * W - 1).bit_length())
    best, best_cost = smallest, math.inf
    N = smallest
    while N <= cap:
        per_fft = (N - W + 1) // ds
        cost = -(-n_blocks // per_fft) * N * math.log2(N)
        if cost < best_cost:
            best, best_cost = N, cost
        if per_fft >= n_blocks:  # one FFT already holds the whole signal
            break
        N *= 2
    return best


def _next_fast_len(n: int, primes=(2, 3, 5)) -> int:
    """Smallest m >= n whose prime factors are all in ``primes``.

    Equals ``scipy.fft.next_fast_len(n, real=True)`` for (2, 3, 5) and
    ``next_fast_len(n)`` for (2, 3, 5, 7, 11); kept here so that planning a transform
    does not import scipy.fft (~0.2 s).
    """
    m = max(1, int(n))
    while True:
        r = m
        for p in primes:
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


# --------------------------------------------------------------------------- geometry


def _crop(n_samples: int, win_size: int, padding: str) -> tuple[int, int]:
    """Start index (in full-convolution coordinates) and length of the kept output."""
    if padding == "valid":
        return win_size - 1, n_samples - win_size + 1
    if padding == "same":
        return int(math.ceil((win_size - 1) / 2)), n_samples
    raise ConfigError(f"spectrogram.padding must be one of {PADDINGS}, got {padding!r}")


def output_length(n_samples: int, win_size: int, downsample_factor: int, padding: str = "valid") -> int:
    """Number of time bins T' the transform returns.

    ``ceil((S - W + 1) / ds)`` for 'valid', ``ceil(S / ds)`` for 'same'; 0 when a
    'valid' transform has no complete window.
    """
    _, length = _crop(n_samples, win_size, padding)
    return max(0, -(-length // int(downsample_factor)))


def time_axis(n_samples: int, win_size: int, downsample_factor: int, padding: str = "valid") -> np.ndarray:
    """Sample index of each output bin's centre (reference ``get_xAxis``), float64 (T',).

    Each full-rate output sample is labelled with the input index of its window's
    centre; a bin's label is the mean over the samples it averages (the last, partial
    bin included). For odd W and 'valid': ``(W-1)/2 + m*ds + (ds-1)/2``.
    """
    start, length = _crop(n_samples, win_size, padding)
    if length <= 0:
        return np.zeros(0)
    ds = int(downsample_factor)
    labels = np.arange(length, dtype=np.float64) + start - (win_size - 1) / 2
    n_out = -(-length // ds)
    pad = n_out * ds - length
    sums = np.add.reduceat(labels, np.arange(0, length, ds))
    counts = np.full(n_out, ds, dtype=np.float64)
    counts[-1] = ds - pad
    return sums / counts


# --------------------------------------------------------------------------- transform


@dataclass
class VQTPlan:
    """Prepared VQT of real signals of one length.

    Build with :func:`plan_vqt`; apply :meth:`transform` to any number of chunks of
    rows. The kernels (and, for the 'fft' engine, their spectra) are made once.
    """

    bank: FilterBank
    n_samples: int
    downsample_factor: int
    padding: str
    take_abs: bool
    complex_pooling: str
    device: str
    engine: str  # 'direct' (strided conv1d), 'fft' (overlap-save), 'numpy', 'numba', 'baseband'
    start: int  # first kept output, full-convolution coordinates
    length: int  # kept full-rate outputs
    n_full: int  # complete ds-blocks (the partial last one is separate)
    weight: object = None  # (2F, 1, W) conv1d weight for 'direct'
    weight_tail: object = None  # (2F, 1, W) weight for the last, partial block
    fft_size: int = 0  # 'fft': block length N
    fft_blocks: int = 0  # 'fft': ds-blocks per FFT block
    fft_coef: object = None  # 'fft': (2F, N//2+1) spectra of Re h, Im h; 'numpy', 'numba': (F, N) of h; phase-shifted
    band_groups: tuple = ()  # 'baseband': (filters, decimation D, bin index, coefs) per D
    max_batch_bytes: int = 128 * 2**20
    workers: int = 1  # 'numpy', 'numba': threads

    @property
    def n_out(self) -> int:
        """Number of output time bins T'."""
        return output_length(self.n_samples, self.bank.win_size, self.downsample_factor, self.padding)

    def transform_array(self, x, out: np.ndarray | None = None) -> np.ndarray:
        """As :meth:`transform`, returned as a numpy array (C, F, T') on the host; the
        host engines ('numpy', 'numba') never import torch. ``out``: a float32 (C, F, T')
        C-contiguous array to fill and return (the host engines write into it directly)."""
        if self.engine not in HOST_ENGINES:
            res = self.transform(x).cpu().numpy()
            if out is None:
                return res
            out[...] = res
            return out
        xa = np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x, dtype=np.float32)
        self._check_input(xa.shape)
        shape = (xa.shape[0], self.bank.n_freq_bins, self.n_out)
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise SpectrogramError(f"VQT out must be a C-contiguous float32 array of shape {shape}")
        if out.size and xa.shape[0]:
            if self.engine == "numba":
                from .vqt_numba import overlap_save_numba

                overlap_save_numba(self, xa, out)
            else:
                engines.overlap_save_numpy(self, xa, out)
        return out

    def _check_input(self, shape) -> None:
        if len(shape) != 2 or shape[1] != self.n_samples:
            raise SpectrogramError(f"VQT plan is for signals of {self.n_samples} samples, got shape {tuple(shape)}")

    def transform(self, x):
        """Transform real signals.

        Parameters
        ----------
        x : array_like or torch.Tensor, shape (C, S)
            Real signals with S = ``n_samples``.

        Returns
        -------
        torch.Tensor on ``device``, shape (C, F, T')
            float32 block means of the magnitude (``take_abs``), else complex64.
        """
        import torch

        if self.engine in HOST_ENGINES:
            return torch.from_numpy(self.transform_array(x))
        xt = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float32))
        xt = xt.to(device=self.device, dtype=torch.float32)
        self._check_input(tuple(xt.shape))
        C, F = xt.shape[0], self.bank.n_freq_bins
        out = torch.zeros(
            (C, F, self.n_out), device=self.device, dtype=torch.float32 if self.take_abs else torch.complex64
        )
        if C == 0 or self.n_out == 0:
            return out
        if self.n_full > 0:
            {"fft": engines.overlap_save, "baseband": engines.baseband}.get(self.engine, engines.direct)(self, xt, out)
        if self.n_full < self.n_out:
            out[:, :, self.n_full :] = engines.tail(self, xt)
        return out


def plan_vqt(
    bank: FilterBank,
    n_samples: int,
    downsample_factor: int = 20,
    padding: str = "valid",
    take_abs: bool = True,
    complex_pooling: str = "mean",
    device: str = "cpu",
    engine: str = "auto",
    max_batch_bytes: int | None = None,
    label: str = "signal",
    band_eps: float = 1e-5,
    band_oversample: float = 1.0,
    workers: int | None = None,
) -> VQTPlan:
    """Prepare a VQT of real signals of ``n_samples`` samples.

    Parameters
    ----------
    bank : FilterBank
        From :func:`make_vqt_filters`.
    n_samples : int
        Signal length S.
    downsample_factor : int
        ds: full-rate output samples averaged per output bin; the last bin averages
        the samples left (``ceil_mode``).
    padding : {'valid', 'same'}
        'valid' keeps the S - W + 1 samples where the window lies inside the signal;
        'same' keeps S samples (zero padding, torch ``conv1d`` centring).
    take_abs : bool
        Magnitude (envelope) output, else complex.
    complex_pooling : {'mean', 'polar'}
        Complex output only. 'mean' averages the complex values of a block. 'polar'
        averages magnitude and raw phase angle separately: the reference's behaviour,
        wrong at the +-pi wrap, kept to reproduce it.
    device : str
        torch device ('cpu', 'cuda', ...).
    engine : {'auto', 'direct', 'fft', 'numpy', 'numba', 'baseband'}
        'direct': strided ``conv1d`` of the W-tap filters (any output; cuDNN on GPU).
        'fft': overlap-save FFT blocks, magnitude output only. 'numpy': the 'fft'
        blocks in numpy threads, magnitude output on CPU only, without torch (a
        session's engine is chosen in :mod:`facerhythm_core.spectrogram`). 'numba': the
        same blocks, with the inverse FFTs, magnitudes and block sums fused in one
        compiled loop (CPU, magnitude output, numba installed). 'auto':
        'fft' for magnitude output on CPU of signals at least 1.5 W long, else
        'direct'. These give the same numbers up to float32 rounding. 'baseband' (opt-in, magnitude
        only, approximate): as 'fft', but each filter's band is cropped and inverse
        transformed at a reduced rate; see ``band_eps`` and docs/spectrogram.md for
        its measured error and speed.
    max_batch_bytes : int or None
        Rough cap on the largest intermediate buffer. None: 8 MiB for 'fft' (its
        product spectra and irfft outputs, ~2.7 MB each, then stay in the caches; on
        the 2-core EPYC VM, 2 threads, a 1000-sample trial of 448 rows took 42 ms
        against 98 ms with the former 48 MiB and 50 ms with 2 MiB, 60 rows x 20 000
        samples 228 ms against 370 ms; the output is identical for any batch size),
        128 MiB for the other engines. 'numba' ignores it: its tiles hold at most
        :data:`facerhythm_core.vqt_numba.MAX_LANES` (row, block) pairs.
    workers : int or None
        'numpy' and 'numba' only: threads; None = :func:`facerhythm_core.runtime.cpu_threads`.
    label : str
        Name of the signal (e.g. "session s1, video 0") for error messages.
    band_eps : float
        'baseband' only: spectrum bins where |H_k| < ``band_eps`` * max |H_k| are
        dropped (cropping error).
    band_oversample : float
        'baseband' only: each filter's reduced rate is at least this many times its
        kept bandwidth; the block mean of |y| is a midpoint rule over those samples
        (quadrature error, falls as this grows; 1 = critically sampled).

    Raises
    ------
    SpectrogramError
        A 'valid' transform of a signal shorter than the window.
    ConfigError
        Bad parameter values.
    """
    ds = int(downsample_factor)
    _check_plan_args(ds, take_abs, complex_pooling, device, engine, band_eps, band_oversample)
    W = bank.win_size
    S = int(n_samples)
    if engine == "auto":
        # FFT blocks pay off once the output is about half a window long: a 1000-frame
        # trial at W = 481 (520 outputs) took 0.70 s 'direct' and 0.29 s 'fft' per 690
        # rows; 'direct' stays faster only for a few dozen outputs (S = 560: 0.11 vs 0.35 s)
        engine = "fft" if take_abs and str(device) == "cpu" and 2 * S >= 3 * W else "direct"

    if S < 1:
        raise SpectrogramError(f"{label}: empty signal (0 samples)")
    if padding == "valid" and S < W:
        raise SpectrogramError(
            f"{label}: {S} frames is shorter than the VQT window of {W} frames "
            f"(padding='valid' needs at least {W}). Fix: lower spectrogram.win_size, raise "
            "f_min or lower q_low_f (W = ceil(q_low_f * fs / f_min)), use padding 'same', "
            "or track the session's videos contiguously so short videos are joined"
        )
    start, length = _crop(S, W, padding)
    kernels = _kernels(
        bank.filters.astype(np.complex128),
        engine,
        take_abs,
        complex_pooling,
        ds,
        length,
        device,
        band_eps,
        band_oversample,
    )
    if max_batch_bytes is None:
        # 'numpy': per thread; 4 MiB (4 rows of a 1000-frame trial) measured best
        max_batch_bytes = {"fft": 8, "numpy": 4}.get(engine, 128) * 2**20
    if workers is None:
        from .runtime import cpu_threads

        workers = cpu_threads()
    plan = VQTPlan(
        bank=bank,
        n_samples=S,
        downsample_factor=ds,
        padding=padding,
        take_abs=bool(take_abs),
        complex_pooling=complex_pooling,
        device=str(device),
        engine=engine,
        start=start,
        length=length,
        n_full=length // ds,
        **kernels,
        max_batch_bytes=int(max_batch_bytes),
        workers=max(1, int(workers)),
    )
    logger.debug("VQT plan %s: S=%d W=%d ds=%d engine=%s", label, S, W, ds, engine)
    return plan


def _check_plan_args(ds, take_abs, complex_pooling, device, engine, band_eps, band_oversample) -> None:
    if ds < 1:
        raise ConfigError(f"spectrogram.downsample_factor must be >= 1, got {ds}")
    if complex_pooling not in COMPLEX_POOLINGS:
        raise ConfigError(f"complex_pooling must be one of {COMPLEX_POOLINGS}, got {complex_pooling!r}")
    if engine not in ENGINES:
        raise ConfigError(f"VQT engine must be one of {ENGINES}, got {engine!r}")
    if not 0 < band_eps < 1 or not band_oversample >= 1:
        raise ConfigError(f"VQT band_eps must be in (0, 1) and band_oversample >= 1, got {band_eps}, {band_oversample}")
    if engine in HOST_ENGINES and str(device) != "cpu":
        raise ConfigError(f"VQT engine {engine!r} runs on the CPU only, not on {device!r}; use 'fft' or 'direct'")
    if engine == "numba":
        from .vqt_numba import HAVE_NUMBA

        if not HAVE_NUMBA:
            raise ConfigError("VQT engine 'numba' needs numba, which does not load here; use 'numpy' or 'auto'")
    if engine in ("fft", "numpy", "numba", "baseband") and not take_abs:
        raise ConfigError(f"VQT engine {engine!r} supports magnitude output only; use 'direct'")


def _kernels(h: np.ndarray, engine, take_abs, complex_pooling, ds, length, device, band_eps, band_oversample) -> dict:
    """The kernels an engine applies: torch ``conv1d`` weights (every torch engine's
    tail), the overlap-save spectra ('fft' as a torch tensor, the host engines' as an array),
    'baseband''s band groups, and the block geometry."""
    W = h.shape[1]
    k = dict(weight=None, weight_tail=None, fft_size=0, fft_blocks=0, fft_coef=None, band_groups=())
    if engine not in HOST_ENGINES:
        k["weight"] = k["weight_tail"] = engines.conv_weight(h, device)
        if not take_abs and complex_pooling == "mean":
            # the mean of y over a block is one sample of y convolved with a boxcar
            k["weight"] = engines.conv_weight(np.stack([np.convolve(hk, np.full(ds, 1.0 / ds)) for hk in h]), device)
    if engine == "baseband":
        # N a multiple of ds, so every divisor of ds is a possible decimation
        target = min(max(2048, 8 * (W + 3 * ds)), (length // ds) * ds + W + 2 * ds)
        k["fft_size"] = ds * _next_fast_len(-(-target // ds), (2, 3, 5, 7, 11))
        k["fft_blocks"] = (k["fft_size"] - W - 2 * ds) // ds
        k["band_groups"] = engines.band_groups(
            h, k["fft_size"], ds, W - 1 + ds, float(band_eps), float(band_oversample), device
        )
    if engine in ("fft", *HOST_ENGINES):
        N = _overlap_save_size(W, ds, length // ds)
        j0 = W - 1  # first kept output in a block: the first with its whole window inside
        if engine == "fft":  # Re h and Im h apart: two irffts a filter
            hr = np.fft.rfft(np.concatenate([h.real, h.imag]), n=N, axis=1)
        else:  # the complex filter: one complex ifft a filter (numpy: ~10 % faster)
            hr = np.fft.fft(h, n=N, axis=1)
        hr = (hr * np.exp(2j * np.pi * np.arange(hr.shape[1]) * j0 / N)).astype(np.complex64)
        if engine == "fft":
            import torch

            hr = torch.as_tensor(hr, device=device)
        k.update(fft_size=N, fft_blocks=(N - j0) // ds, fft_coef=hr)
    return k


def vqt(
    x,
    bank: FilterBank,
    downsample_factor: int = 20,
    padding: str = "valid",
    take_abs: bool = True,
    complex_pooling: str = "mean",
    device: str = "cpu",
    **plan_kwargs,
) -> np.ndarray:
    """One-shot VQT of real signals ``x`` (C, S) -> numpy (C, F, T'); see :func:`plan_vqt`.

    Examples
    --------
    >>> from facerhythm_core.vqt_filters import make_vqt_filters
    >>> bank = make_vqt_filters(fs=120.0, f_max=54.0)
    >>> x = np.sin(2 * np.pi * 5.0 * np.arange(2400) / 120.0)[None]
    >>> vqt(x, bank).shape
    (1, 36, 96)
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    plan = plan_vqt(
        bank,
        x.shape[-1],
        downsample_factor=downsample_factor,
        padding=padding,
        take_abs=take_abs,
        complex_pooling=complex_pooling,
        device=device,
        **plan_kwargs,
    )
    return plan.transform_array(x)
