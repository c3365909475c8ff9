"""VQT filter bank: the analytic filters of a Variable-Q transform.

Re-implements ``vqt.helpers.make_VQT_filters`` of ``vqt`` 0.1.3 (face-rhythm 0.3.3; see
``docs/spectrogram.md``): log-spaced centre frequencies, Q spread log-linearly, one
window length ``W`` for all filters, analytic (Hilbert) filters of unit L1 norm.
The transform that applies them is :mod:`facerhythm_core.vqt`.

Deliberate difference from the reference (can be switched back for comparison):
``carrier_fix=True``: the carrier runs at exactly ``f_k`` (the reference's is
``f_k * W / (W - 1)``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

SYMMETRIES = ("center", "left", "right")


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
