"""Spectral QC figures: mean spectrogram of the points in each ROI, mean spectrum
per ROI."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .arrays import MAX_DRAWN, bin_series
from .style import OKABE_ITO, _boundaries, _style, new_figure


def roi_mean_spectrogram(spec: np.ndarray, membership: Mapping[str, np.ndarray]) -> dict:
    """Mean over the points of each ROI.

    Parameters
    ----------
    spec : ndarray, shape (2, N, F, T)
        Magnitudes (complex input is reduced to magnitude).
    membership : mapping of name -> ndarray, bool, shape (N,)

    Returns
    -------
    dict of name -> ndarray, float64, shape (2, F, T); NaN for an ROI with no point.
    """
    s = np.abs(spec) if np.iscomplexobj(spec) else np.asarray(spec)
    out = {}
    for name, sel in membership.items():
        sel = np.asarray(sel, bool)
        if sel.any():
            out[name] = s[:, sel].mean(axis=1, dtype=np.float64)
        else:
            out[name] = np.full((s.shape[0],) + s.shape[2:], np.nan)
    return out


def plot_mean_spectrograms(
    means: Mapping[str, Sequence[np.ndarray]],
    times: Sequence[np.ndarray],
    frequencies: np.ndarray,
    offsets: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """Mean spectrogram per ROI (rows) and displacement axis (columns x, y).

    Parameters
    ----------
    means : mapping of ROI name -> sequence of ndarray, shape (2, F, T_i)
        Per segment, the mean over the ROI's points (see :func:`roi_mean_spectrogram`).
    times : sequence of ndarray, shape (T_i,)
        Session time (s) of each bin centre, per segment.
    frequencies : ndarray, shape (F,)
        Hz.
    offsets : sequence of float, optional
        Segment start times (s), for boundary lines.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(means)
    freqs = np.asarray(frequencies, np.float64)
    allv = np.concatenate([np.asarray(m).ravel() for v in means.values() for m in v])
    allv = allv[np.isfinite(allv)]
    vmin, vmax = np.percentile(allv, [1, 99.5]) if allv.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    total_t = sum(len(t) for t in times)
    with _style():
        fig = new_figure(11.0, 1.0 + 2.3 * len(names))
        axes = fig.subplots(len(names), 2, squeeze=False, sharex=True, sharey=True)
        mesh = None
        for r, name in enumerate(names):
            for c, axis_name in enumerate("xy"):
                ax = axes[r, c]
                for seg, t in zip(means[name], times):
                    seg = np.asarray(seg)[c]
                    t = np.asarray(t, np.float64)
                    budget = max(int(MAX_DRAWN * len(t) / max(total_t, 1)), 2)
                    tb, sb = bin_series(t, seg.T, max_points=budget)
                    if len(tb) < 2:
                        continue
                    mesh = ax.pcolormesh(
                        tb, freqs, sb.T, shading="nearest", cmap="magma", vmin=vmin, vmax=vmax, rasterized=True
                    )
                ax.set_yscale("log")
                if offsets is not None:
                    _boundaries(ax, offsets, labels if r == 0 else None)
                ax.set_title(f"{name}: {axis_name} displacement")
                if c == 0:
                    ax.set_ylabel("frequency (Hz)")
                if r == len(names) - 1:
                    ax.set_xlabel("time in session (s)")
        if mesh is not None:
            fig.colorbar(mesh, ax=axes, label="normalized magnitude (a.u.)", shrink=0.9)
        fig.suptitle(title or "Mean spectrogram of the points in each ROI")
    return fig


def plot_power_spectrum(spectra: Mapping[str, np.ndarray], frequencies: np.ndarray, title: str | None = None):
    """Time-averaged spectrum per ROI: mean over points and the 25-75 % band.

    Parameters
    ----------
    spectra : mapping of ROI name -> ndarray, shape (2, n, F)
        Per point (n points of the ROI), the time-mean magnitude of x and y.
    frequencies : ndarray, shape (F,)
        Hz.

    Returns
    -------
    matplotlib.figure.Figure
    """
    freqs = np.asarray(frequencies, np.float64)
    with _style():
        fig = new_figure(10.0, 3.8)
        axes = fig.subplots(1, 2, sharey=True)
        for c, axis_name in enumerate("xy"):
            ax = axes[c]
            for i, (name, s) in enumerate(spectra.items()):
                s = np.asarray(s, np.float64)[c]
                if s.shape[0] == 0:
                    continue
                col = OKABE_ITO[i % len(OKABE_ITO)]
                q1, q3 = np.percentile(s, [25, 75], axis=0)
                ax.fill_between(freqs, q1, q3, color=col, alpha=0.15, lw=0)
                ax.plot(
                    freqs, s.mean(axis=0), color=col, lw=1.6, marker="o", ms=2.5, label=f"{name} (n = {s.shape[0]})"
                )
            ax.set_xscale("log")
            ax.set_xlabel("frequency (Hz)")
            ax.set_title(f"{axis_name} displacement")
            ax.grid(True, which="both", color="0.9", lw=0.6)
        axes[0].set_ylabel("mean normalized magnitude (a.u.)")
        axes[0].legend(loc="best")
        fig.suptitle(title or "Mean spectrum per ROI (line: mean over points, band: 25-75 %)")
    return fig
