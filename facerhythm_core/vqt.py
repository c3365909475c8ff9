"""Variable-Q transform (VQT): filter bank and a memory-bounded transform.

Re-implements the spectral kernel of face-rhythm 0.3.3 (``vqt`` 0.1.3, see
``docs/spectrogram.md``): log-spaced centre frequencies, Q spread log-linearly, one
window length ``W`` for all filters, analytic (Hilbert) filters of unit L1 norm,
convolution with 'valid' or 'same' cropping, then block averaging by
``downsample_factor`` with the last partial block averaged over the samples it has
(``avg_pool1d(ceil_mode=True)``). Rows go through in blocks of output time, so memory
does not grow with the signal length.

Engines: 'fft' (overlap-save, the CPU default) and 'direct' (strided ``conv1d``) give the
same numbers; 'baseband' (opt-in) evaluates each filter at a reduced rate from a cropped
band of its spectrum, faster but approximate (stated tolerance in docs/spectrogram.md).

Deliberate differences from the reference (each can be switched back for comparison):

- ``carrier_fix=True``: the carrier runs at exactly ``f_k`` (the reference's is
  ``f_k * W / (W - 1)``).
- complex output is block-averaged as complex numbers (``complex_pooling="mean"``);
  the reference averages magnitude and raw phase angle separately ("polar"), which
  breaks at the +-pi wrap.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, SpectrogramError

logger = logging.getLogger(__name__)

PADDINGS = ("valid", "same")
SYMMETRIES = ("center", "left", "right")
ENGINES = ("auto", "direct", "fft", "baseband")
COMPLEX_POOLINGS = ("mean", "polar")


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class FilterBank:
    """A VQT filter bank.

    Attributes
    ----------
    filters : ndarray, complex64, shape (F, W)
        Analytic filters, each of unit L1 norm. Convolve (not correlate) with them.
    freqs : ndarray, float32, shape (F,)
        Centre frequencies in Hz.
    wins : ndarray, float32, shape (F, W)
        Window of each filter (before the carrier).
    q : ndarray, float64, shape (F,)
        Q of each filter (cycles inside the window's support).
    fs : float
        Sample rate in Hz the bank was designed for.
    carrier_fix : bool
        Whether the carrier runs at exactly ``freqs`` (True) or at the reference's
        ``freqs * W / (W - 1)`` (False).
    """

    filters: np.ndarray
    freqs: np.ndarray
    wins: np.ndarray
    q: np.ndarray
    fs: float
    carrier_fix: bool = True

    @property
    def win_size(self) -> int:
        """Window length W in samples."""
        return int(self.filters.shape[1])

    @property
    def n_freq_bins(self) -> int:
        return int(self.filters.shape[0])


def default_win_size(q_low_f: float, fs: float, f_min: float) -> int:
    """The reference's window-length rule: ``ceil(q_low_f * fs / f_min)``, made odd, >= 3.

    Examples
    --------
    >>> default_win_size(4.0, 120.0, 1.0)
    481
    """
    w = int(np.ceil(q_low_f * (fs / f_min)))
    if w % 2 != 1:
        w += 1
    return max(w, 3)


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


def _hilbert(x: np.ndarray) -> np.ndarray:
    """Analytic signal along the last axis: ``scipy.signal.hilbert`` restated in numpy."""
    n = x.shape[-1]
    h = np.zeros(n)
    h[0] = 1
    if n % 2 == 0:
        h[n // 2] = 1
        h[1 : n // 2] = 2
    else:
        h[1 : (n + 1) // 2] = 2
    return np.fft.ifft(np.fft.fft(x, axis=-1) * h, axis=-1)


def _window_values(window_type, resolution: int, xw: np.ndarray) -> np.ndarray:
    """The reference's window at positions ``xw`` (support [-0.5, 0.5], 0 outside).

    The reference samples the mother window at ``resolution`` points and evaluates a
    cubic spline through them. For 'hann' that spline equals ``0.5 + 0.5 cos(2 pi x)``
    to ~1e-14 (the float32 windows come out identical), so it is evaluated directly:
    this avoids importing scipy.signal and scipy.interpolate (~1 s) in the stage.
    """
    inside = (xw >= -0.5) & (xw <= 0.5)
    if window_type == "hann":
        return np.where(inside, 0.5 + 0.5 * np.cos(2 * np.pi * np.clip(xw, -0.5, 0.5)), 0.0)
    import scipy.interpolate

    mother = _mother_window(window_type, int(resolution))
    x_mother = np.linspace(0, 1, len(mother), endpoint=True) - 0.5
    # what scipy's interp1d(kind='cubic', fill_value=0, bounds_error=False) evaluates
    spline = scipy.interpolate.make_interp_spline(x_mother, mother, k=3)
    inside = (xw >= x_mother[0]) & (xw <= x_mother[-1])
    return np.where(inside, spline(np.clip(xw, x_mother[0], x_mother[-1])), 0.0)


def _mother_window(window_type, resolution: int) -> np.ndarray:
    import scipy.signal

    if window_type == "gaussian":
        # the reference's gaussian: std 0.15 of the support, i.e. +-3.33 sigma
        window_type = ("gaussian", resolution * 0.15)
    try:
        return scipy.signal.windows.get_window(window_type, resolution, fftbins=False)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"spectrogram.window_type {window_type!r} is not a scipy.signal window "
            f"({exc}); use e.g. 'hann', 'hamming', 'blackman' or 'gaussian'"
        ) from exc


def make_vqt_filters(
    fs: float,
    q_low_f: float = 4.0,
    q_high_f: float = 10.0,
    f_min: float = 1.0,
    f_max: float = 60.0,
    n_freq_bins: int = 36,
    win_size: int | None = None,
    window_type: str = "hann",
    symmetry: str = "center",
    taper_asymmetric: bool = True,
    carrier_fix: bool = True,
    mother_resolution: int = 10000,
) -> FilterBank:
    """Build the VQT filter bank (reference ``vqt.helpers.make_VQT_filters``).

    Parameters
    ----------
    fs : float
        Sample rate in Hz.
    q_low_f, q_high_f : float
        Q (cycles inside the window support) at ``f_min`` and at ``f_max``; spread
        geometrically over the bins. Equal values give a constant-Q bank.
    f_min, f_max : float
        Lowest and highest centre frequency in Hz (both included, geometric spacing).
        ``f_max`` above Nyquist (``fs / 2``) is an error; exactly at Nyquist gives a
        warning, because that filter's analytic version is degenerate.
    n_freq_bins : int
        Number of filters F.
    win_size : int or None
        Filter length W in samples; None uses :func:`default_win_size`. Shorter
        windows sit zero-padded in the middle of the W-sample frame.
    window_type : str
        A ``scipy.signal.get_window`` name; 'gaussian' means std = 0.15 of the support.
    symmetry : {'center', 'left', 'right'}
        'left'/'right' keep only that half of each window (causal-ish filters).
    taper_asymmetric : bool
        With a one-sided window, halve the centre sample.
    carrier_fix : bool
        True: carrier ``cos(2 pi f_k (n - (W-1)/2) / fs)``. False: the reference's
        ``cos(linspace(-pi, pi, W) * f_k * W / fs)``, whose frequency is ``W/(W-1)`` too high.
    mother_resolution : int
        Samples of the mother window that each filter's window is interpolated from.

    Returns
    -------
    FilterBank
        ``filters`` (F, W) complex64 with unit L1 norm each, ``freqs`` (F,) float32 Hz,
        ``wins`` (F, W) float32.
    """
    fs = float(fs)
    if not fs > 0:
        raise ConfigError(f"spectrogram sample rate must be > 0 Hz, got {fs}")
    if not (0 < f_min < f_max):
        raise ConfigError(f"spectrogram needs 0 < f_min < f_max, got f_min={f_min}, f_max={f_max}")
    if q_low_f <= 0 or q_high_f <= 0:
        raise ConfigError(f"spectrogram q_low_f and q_high_f must be > 0, got {q_low_f}, {q_high_f}")
    if int(n_freq_bins) < 1:
        raise ConfigError(f"spectrogram n_freq_bins must be >= 1, got {n_freq_bins}")
    if symmetry not in SYMMETRIES:
        raise ConfigError(f"spectrogram.symmetry must be one of {SYMMETRIES}, got {symmetry!r}")
    nyq = fs / 2
    if f_max > nyq * (1 + 1e-9):
        raise ConfigError(
            f"spectrogram f_max={f_max} Hz is above Nyquist ({nyq} Hz at fs={fs} Hz); "
            f"lower f_max (e.g. to {0.9 * nyq:g}) or check the frame rate"
        )
    if f_max >= nyq * (1 - 1e-9):
        warnings.warn(
            f"spectrogram f_max={f_max} Hz sits on Nyquist (fs={fs} Hz): the top filter's "
            "analytic signal is degenerate (strong negative-frequency leakage)",
            stacklevel=2,
        )
    n_freq_bins = int(n_freq_bins)
    if win_size is None:
        win_size = default_win_size(q_low_f, fs, f_min)
    win_size = int(win_size)
    if win_size < 3:
        raise ConfigError(f"spectrogram win_size must be >= 3, got {win_size}")
    W = win_size

    # float32 arithmetic as the reference, so that the truncated window scales agree
    freqs = np.geomspace(f_min, f_max, n_freq_bins, endpoint=True, dtype=np.float32)
    periods_samples = np.float32(fs) * (np.float32(1) / freqs)
    qs = np.geomspace(q_low_f, q_high_f, n_freq_bins, endpoint=True, dtype=np.float32)
    scales = np.clip(qs * periods_samples, 1, None)

    grid = np.linspace(0, 1, W, endpoint=True) - 0.5
    # the reference truncates the scales
    xw = grid[None, :] * (W / scales.astype(int).astype(np.float64)[:, None])
    wins = _window_values(window_type, int(mother_resolution), xw).astype(np.float32)

    if symmetry != "center":
        step = (np.arange(W) <= W // 2).astype(np.float32)
        if symmetry == "right":
            step = step[::-1]
        wins = wins * step
        if taper_asymmetric:
            wins[:, W // 2] *= 0.5

    if carrier_fix:
        t = (np.arange(W) - (W - 1) / 2) / fs  # seconds from the centre
        carrier = np.cos(2 * np.pi * freqs.astype(np.float64)[:, None] * t[None, :])
    else:
        theta = np.linspace(-np.pi, np.pi, W, dtype=np.float32).astype(np.float64)
        carrier = np.cos(theta[None, :] * freqs.astype(np.float64)[:, None] * (W / fs))
    real = carrier * wins.astype(np.float64)
    analytic = _hilbert(real)
    l1 = np.abs(analytic).sum(axis=1, keepdims=True)
    if np.any(l1 == 0):
        raise ConfigError("spectrogram filter bank has an all-zero filter; check window_type/symmetry")
    filters = (analytic / l1).astype(np.complex64)
    return FilterBank(
        filters=filters, freqs=freqs, wins=wins, q=qs.astype(np.float64), fs=fs, carrier_fix=bool(carrier_fix)
    )


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
    engine: str  # 'direct' (strided conv1d), 'fft' (overlap-save), 'baseband'
    start: int  # first kept output, full-convolution coordinates
    length: int  # kept full-rate outputs
    n_full: int  # complete ds-blocks (the partial last one is separate)
    weight: object = None  # (2F, 1, W) conv1d weight for 'direct'
    weight_tail: object = None  # (2F, 1, W) weight for the last, partial block
    fft_size: int = 0  # 'fft': block length N
    fft_blocks: int = 0  # 'fft': ds-blocks per FFT block
    fft_coef: object = None  # 'fft': (2F, N//2+1) spectra of Re h, Im h, phase-shifted
    band_groups: tuple = ()  # 'baseband': (filters, decimation D, bin index, coefs) per D
    max_batch_bytes: int = 128 * 2**20

    @property
    def n_out(self) -> int:
        """Number of output time bins T'."""
        return output_length(self.n_samples, self.bank.win_size, self.downsample_factor, self.padding)

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

        xt = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float32))
        xt = xt.to(device=self.device, dtype=torch.float32)
        if xt.ndim != 2 or xt.shape[1] != self.n_samples:
            raise SpectrogramError(f"VQT plan is for signals of {self.n_samples} samples, got shape {tuple(xt.shape)}")
        C, F = xt.shape[0], self.bank.n_freq_bins
        out = torch.zeros(
            (C, F, self.n_out), device=self.device, dtype=torch.float32 if self.take_abs else torch.complex64
        )
        if C == 0 or self.n_out == 0:
            return out
        if self.n_full > 0:
            {"fft": self._fft, "baseband": self._baseband}.get(self.engine, self._direct)(xt, out)
        if self.n_full < self.n_out:
            out[:, :, self.n_full :] = self._tail(xt)
        return out

    # -- direct engine ------------------------------------------------------------

    def _conv(self, x, weight, p_first: int, stride: int, count: int):
        """y[p] = sum_k h[k] x[p-k] for p = p_first + stride*i, i < count (x = 0 outside).

        ``weight`` holds the flipped taps (conv1d correlates) as (2F, 1, L): real parts,
        then imaginary parts. Returns (re, im), each (rows, F, count).
        """
        import torch

        L = weight.shape[-1]
        # conv1d output i reads x[p_first + stride*i - (L-1) ... p_first + stride*i]
        lo = p_first - (L - 1)
        hi = p_first + stride * (count - 1) + 1
        seg = x[:, max(0, lo) : max(0, min(x.shape[1], hi))]
        seg = torch.nn.functional.pad(seg, (max(0, -lo), max(0, hi - max(lo, x.shape[1]))))
        seg = seg[:, : hi - lo]
        y = torch.nn.functional.conv1d(seg[:, None, :], weight, stride=stride)
        F = weight.shape[0] // 2
        return y[:, :F, :count], y[:, F:, :count]

    def _direct(self, xt, out):
        import torch

        ds, C, F = self.downsample_factor, xt.shape[0], self.bank.n_freq_bins
        complex_mean = not self.take_abs and self.complex_pooling == "mean"
        # full-rate samples held per ds-block: 1 for complex means (one strided sample of
        # the boxcar-smoothed filter), ds otherwise
        per_block = 2 * F * (1 if complex_mean else ds) * 4 * 2
        blocks = max(1, int(self.max_batch_bytes // (per_block * C)))
        rows = C
        if blocks < 64:  # long rows: fewer rows, longer stretches
            blocks = min(self.n_full, 64)
            rows = max(1, int(self.max_batch_bytes // (per_block * blocks)))
        for c0 in range(0, C, rows):
            xb = xt[c0 : c0 + rows]
            for m0 in range(0, self.n_full, blocks):
                n = min(self.n_full, m0 + blocks) - m0
                p0 = self.start + m0 * ds
                if complex_mean:
                    re, im = self._conv(xb, self.weight, p0 + ds - 1, ds, n)
                    res = torch.complex(re, im)
                else:
                    re, im = self._conv(xb, self.weight, p0, 1, n * ds)
                    if self.take_abs:
                        res = torch.hypot(re, im).reshape(*re.shape[:2], n, ds).mean(-1)
                    else:  # reference: magnitude and angle pooled apart
                        z = torch.complex(re, im).reshape(*re.shape[:2], n, ds)
                        res = torch.polar(z.abs().mean(-1), torch.angle(z).mean(-1))
                out[c0 : c0 + rows, :, m0 : m0 + n] = res

    def _tail(self, xt):
        """The last, partial block: every sample it has, full kernels."""
        import torch

        p0 = self.start + self.n_full * self.downsample_factor
        re, im = self._conv(xt, self.weight_tail, p0, 1, self.start + self.length - p0)
        if self.take_abs:
            return torch.hypot(re, im).mean(-1, keepdim=True)
        z = torch.complex(re, im)
        if self.complex_pooling == "mean":
            return z.mean(-1, keepdim=True)
        return torch.polar(z.abs().mean(-1, keepdim=True), torch.angle(z).mean(-1, keepdim=True))

    # -- fft engine ---------------------------------------------------------------

    def _fft(self, xt, out):
        """Overlap-save FFT blocks; magnitude output only.

        FFT block r holds the input from q = start + r*B*ds - ds - (W-1) on, so every
        block's first kept output sits at offset W-1+ds; that shift is folded into the
        filter spectra. Re y and Im y are real convolutions, so each costs one irfft
        of the input block's rfft and the full complex spectrum is never formed.
        """
        import torch

        W, ds, N, B = self.bank.win_size, self.downsample_factor, self.fft_size, self.fft_blocks
        C, F = xt.shape[0], self.bank.n_freq_bins
        n_blk = -(-self.n_full // B)
        q0 = self.start - ds - (W - 1)
        need = q0 + (n_blk - 1) * B * ds + N  # one past the last index read
        padl = max(0, -q0)
        xp = torch.nn.functional.pad(xt, (padl, max(0, need - xt.shape[1])))[:, q0 + padl : need + padl]
        segs = xp.unfold(-1, N, B * ds)  # (C, n_blk, N), a view
        # (row, block) pairs per step so the irfft output (pairs x 2F x N) fits the budget
        pairs = max(1, int(self.max_batch_bytes // (2 * F * N * 4 * 3)))
        rows, blks = max(1, pairs // n_blk), min(n_blk, pairs)
        for c0 in range(0, C, rows):
            for k0 in range(0, n_blk, blks):
                seg = segs[c0 : c0 + rows, k0 : k0 + blks]
                nr, nk = seg.shape[:2]
                Xr = torch.fft.rfft(seg.reshape(nr * nk, N), n=N)
                yy = torch.fft.irfft(Xr[:, None, :] * self.fft_coef, n=N, dim=-1)  # (b, 2F, N)
                mag = torch.hypot(yy[:, :F, : B * ds], yy[:, F:, : B * ds])
                r = torch.nn.functional.avg_pool1d(mag, ds, ds)  # (b, F, B)
                r = r.reshape(nr, nk, F, B).permute(0, 2, 1, 3).reshape(nr, F, nk * B)
                m0, m1 = k0 * B, min(self.n_full, (k0 + nk) * B)
                out[c0 : c0 + nr, :, m0:m1] = r[..., : m1 - m0]

    # -- baseband engine ----------------------------------------------------------

    def _baseband(self, xt, out):
        """Overlap-save blocks as 'fft', each filter evaluated at a reduced rate.

        Filter k's spectrum is kept only on the M_k = N / D_k bins around f_k where
        |H_k| exceeds ``band_eps`` of its peak; an M_k-point inverse FFT of that band
        gives y_k, up to a unit-modulus factor, at every D_k-th sample (exact
        decimation of the band-limited product, so |y_k| = |z_k|). The samples sit
        at the centres of D_k-sample runs (a phase ramp in the coefficients), and the
        block mean of |y| is the mean of the ds / D_k samples in each block
        (midpoint rule).
        """
        import torch

        W, ds, N, B = self.bank.win_size, self.downsample_factor, self.fft_size, self.fft_blocks
        C, F = xt.shape[0], self.bank.n_freq_bins
        n_blk = -(-self.n_full // B)
        q0 = self.start - ds - (W - 1)
        need = q0 + (n_blk - 1) * B * ds + N
        padl = max(0, -q0)
        xp = torch.nn.functional.pad(xt, (padl, max(0, need - xt.shape[1])))[:, q0 + padl : need + padl]
        segs = xp.unfold(-1, N, B * ds)  # (C, n_blk, N), a view
        band_len = sum(len(g[0]) * g[2].shape[1] for g in self.band_groups)
        pairs = max(1, int(self.max_batch_bytes // ((N + 3 * band_len) * 8)))
        rows, blks = max(1, pairs // n_blk), min(n_blk, pairs)
        for c0 in range(0, C, rows):
            for k0 in range(0, n_blk, blks):
                seg = segs[c0 : c0 + rows, k0 : k0 + blks]
                nr, nk = seg.shape[:2]
                X = torch.fft.fft(seg.reshape(nr * nk, N), n=N)  # (b, N) complex
                r = torch.empty((nr * nk, F, B), device=xt.device, dtype=torch.float32)
                for ks, D, idx, coef in self.band_groups:
                    band = X[:, None, :] if D == 1 else X[:, idx]  # D = 1: no gather
                    z = torch.fft.ifft(band * coef, dim=-1)[..., : B * ds // D]
                    a = torch.view_as_real(z).square().sum(-1).sqrt_()  # |z|, faster than abs
                    r[:, ks] = a.reshape(nr * nk, len(ks), B, ds // D).mean(-1)
                r = r.reshape(nr, nk, F, B).permute(0, 2, 1, 3).reshape(nr, F, nk * B)
                m0, m1 = k0 * B, min(self.n_full, (k0 + nk) * B)
                out[c0 : c0 + nr, :, m0:m1] = r[..., : m1 - m0]


def _band_groups(h: np.ndarray, N: int, ds: int, j0: int, eps: float, oversample: float, device):
    """Per decimation D (a divisor of ds): filters, (n, M) bin indices and coefficients.

    Filter k keeps the shortest circular run of N-point DFT bins holding every bin with
    |H_k| > eps * max |H_k|; D_k is the largest divisor of ds with N / D_k >= oversample
    times that run. Coefficient m (bin b = a + m) is H_k[b] e^{2 pi i b (j0 + (D-1)/2) / N} / D:
    the block offset, the shift to the centre of each D-sample run and the
    decimation's scale.
    """
    import torch

    H = np.fft.fft(h, n=N, axis=1)
    A = np.abs(H)
    divisors = [d for d in range(ds, 0, -1) if ds % d == 0 and N % d == 0]
    plan = {}
    for k in range(h.shape[0]):
        on = np.nonzero(A[k] > eps * A[k].max())[0]
        gaps = np.diff(np.concatenate([on, [on[0] + N]]))
        g = int(np.argmax(gaps))
        first = on[(g + 1) % len(on)]  # start of the run after the gap
        width = N - int(gaps[g]) + 1
        D = next((d for d in divisors if N // d >= oversample * width), 1)
        M = N // D
        a = int(first) - (M - width) // 2  # centre the run in the band
        # signed start: the bins are then the band's true frequencies, which matters for
        # the half-sample shift (D even) of the band-limited samples
        a = (a + N // 2) % N - N // 2 if D > 1 else 0  # D = 1: all bins, in order
        b = a + np.arange(M)
        c = H[k, b % N] * np.exp(2j * np.pi * b * (j0 + (D - 1) / 2) / N) / D
        plan.setdefault(D, []).append((k, b % N, c))
    groups = []
    for D in sorted(plan, reverse=True):
        ks = [k for k, _, _ in plan[D]]
        bins = np.stack([b for _, b, _ in plan[D]])
        coefs = np.stack([c for _, _, c in plan[D]])
        groups.append(
            (
                torch.as_tensor(ks, device=device),
                D,
                torch.as_tensor(bins, device=device),
                torch.as_tensor(coefs.astype(np.complex64), device=device),
            )
        )
    return tuple(groups)


def _conv_weight(h: np.ndarray, device):
    """(F, L) complex taps -> (2F, 1, L) float32 conv1d weight, flipped (conv1d correlates)."""
    import torch

    hf = h[:, ::-1]
    w = np.concatenate([hf.real, hf.imag], axis=0)[:, None, :].astype(np.float32)
    return torch.as_tensor(np.ascontiguousarray(w), device=device)


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
    engine : {'auto', 'direct', 'fft', 'baseband'}
        'direct': strided ``conv1d`` of the W-tap filters (any output; cuDNN on GPU).
        'fft': overlap-save FFT blocks, magnitude output only. 'auto': 'fft' for
        magnitude output on CPU of signals at least 1.5 W long, else 'direct'. These
        give the same numbers up to float32 rounding. 'baseband' (opt-in, magnitude
        only, approximate): as 'fft', but each filter's band is cropped and inverse
        transformed at a reduced rate; see ``band_eps`` and docs/spectrogram.md for
        its measured error and speed.
    max_batch_bytes : int or None
        Rough cap on the largest intermediate buffer. None: 48 MiB for 'fft' (its
        spectra and irfft outputs, ~16 MB each, then stay in the last-level cache:
        ~1.5x less CPU time than 128 MiB, one thread, 2-core EPYC; much smaller
        batches mean many more parallel regions, slow on a busy machine), 128 MiB
        for the other engines.
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
    import torch

    ds = int(downsample_factor)
    if ds < 1:
        raise ConfigError(f"spectrogram.downsample_factor must be >= 1, got {downsample_factor}")
    if complex_pooling not in COMPLEX_POOLINGS:
        raise ConfigError(f"complex_pooling must be one of {COMPLEX_POOLINGS}, got {complex_pooling!r}")
    if engine not in ENGINES:
        raise ConfigError(f"VQT engine must be one of {ENGINES}, got {engine!r}")
    if not 0 < band_eps < 1 or not band_oversample >= 1:
        raise ConfigError(f"VQT band_eps must be in (0, 1) and band_oversample >= 1, got {band_eps}, {band_oversample}")
    if engine in ("fft", "baseband") and not take_abs:
        raise ConfigError(f"VQT engine {engine!r} supports magnitude output only; use 'direct'")
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
    h = bank.filters.astype(np.complex128)
    weight_tail = _conv_weight(h, device)
    weight = weight_tail
    if not take_abs and complex_pooling == "mean":
        # the mean of y over a block is one sample of y convolved with a boxcar
        weight = _conv_weight(np.stack([np.convolve(hk, np.full(ds, 1.0 / ds)) for hk in h]), device)
    fft_size = fft_blocks = 0
    fft_coef = None
    band_groups = ()
    if engine == "baseband":
        # N a multiple of ds, so every divisor of ds is a possible decimation
        target = min(max(2048, 8 * (W + 3 * ds)), (length // ds) * ds + W + 2 * ds)
        fft_size = ds * _next_fast_len(-(-target // ds), (2, 3, 5, 7, 11))
        fft_blocks = (fft_size - W - 2 * ds) // ds
        band_groups = _band_groups(h, fft_size, ds, W - 1 + ds, float(band_eps), float(band_oversample), device)
    if engine == "fft":
        # ~8x the window: short enough to stay in cache, long enough that the W-1
        # discarded samples per block cost little; no longer than a short signal needs
        fft_size = _next_fast_len(min(max(2048, 8 * (W + 3 * ds)), (length // ds) * ds + W + 2 * ds))
        fft_blocks = (fft_size - W - 2 * ds) // ds
        j0 = W - 1 + ds  # first kept output in a block
        hr = np.fft.rfft(np.concatenate([h.real, h.imag]), n=fft_size, axis=1)
        hr = hr * np.exp(2j * np.pi * np.arange(hr.shape[1]) * j0 / fft_size)
        fft_coef = torch.as_tensor(hr.astype(np.complex64), device=device)
    if max_batch_bytes is None:
        max_batch_bytes = (48 if engine == "fft" else 128) * 2**20
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
        weight=weight,
        weight_tail=weight_tail,
        fft_size=fft_size,
        fft_blocks=fft_blocks,
        fft_coef=fft_coef,
        band_groups=band_groups,
        max_batch_bytes=int(max_batch_bytes),
    )
    logger.debug("VQT plan %s: S=%d W=%d ds=%d engine=%s", label, S, W, ds, engine)
    return plan


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
    return plan.transform(x).cpu().numpy()
