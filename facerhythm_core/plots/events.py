"""Event-triggered averages of the TCA components."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .style import OKABE_ITO, _style, new_figure


def plot_event_triggered(columns: Sequence[Mapping], title: str | None = None):
    """Event-triggered averages: one row per component, one column per (decomposition,
    label).

    Parameters
    ----------
    columns : sequence of mapping
        Each with ``title``, ``lags`` (L,) s, ``mean``, ``low``, ``high`` (L, R): the
        mean over events and its confidence interval, ``n`` (events used),
        ``n_skipped`` and ``components`` (R row labels).

    Returns
    -------
    matplotlib.figure.Figure
        Each panel: the mean (line), its CI (band), the event at 0 s (dashed) and the
        mean over negative lags (dotted, the pre-event level). An empty column says
        that no event could be used.
    """
    if not columns:
        raise ValueError("no event-aligned data to draw")
    n_rows = max(np.asarray(c["mean"]).shape[1] for c in columns)
    n_cols = len(columns)
    with _style():
        fig = new_figure(max(4.0, 2.6 * n_cols + 0.6), 1.35 * n_rows + 1.0)
        axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex="col")
        for j, c in enumerate(columns):
            lags = np.asarray(c["lags"], np.float64)
            mean, lo, hi = (np.asarray(c[k], np.float64) for k in ("mean", "low", "high"))
            head = f"{c['title']}\n{c['n']} event(s)" + (f", {c['n_skipped']} skipped" if c.get("n_skipped") else "")
            for r in range(n_rows):
                ax = axes[r, j]
                if r >= mean.shape[1] or c["n"] == 0:
                    ax.text(
                        0.5,
                        0.5,
                        "no event usable" if c["n"] == 0 and r == 0 else "",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                        fontsize=8,
                    )
                    ax.set_yticks([])
                else:
                    col = OKABE_ITO[r % len(OKABE_ITO)]
                    if np.isfinite(lo[:, r]).any():
                        ax.fill_between(lags, lo[:, r], hi[:, r], color=col, alpha=0.25, lw=0)
                    ax.plot(lags, mean[:, r], color=col, lw=1.4)
                    pre = lags < 0
                    if pre.any():
                        ax.axhline(float(np.mean(mean[pre, r])), color="0.4", lw=0.8, ls=":")
                    ax.text(0.02, 0.95, c["components"][r], transform=ax.transAxes, fontsize=7.5, va="top", ha="left")
                ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
                if r == 0:
                    ax.set_title(head, fontsize=9)
                if r == n_rows - 1:
                    ax.set_xlabel("time from event (s)")
                if j == 0:
                    ax.set_ylabel("time factor\n(a.u.)", fontsize=8)
        fig.suptitle(title or "TCA components around events (mean and confidence interval)")
    return fig
