"""TCA figures: the components (points maps, frequency and time factors, stacked
axis) and the fit (EVR, convergence, rank sweep)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .arrays import bin_series, point_index_map
from .style import OKABE_ITO, _boundaries, _paint_map, _phase_line, _style, new_figure


def plot_tca_components(
    points_x: np.ndarray,
    points_y: np.ndarray,
    frequency: np.ndarray,
    frequencies: np.ndarray,
    time_panels: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    positions: np.ndarray,
    image: np.ndarray | None = None,
    evr: np.ndarray | None = None,
    stack_factor: np.ndarray | None = None,
    stack_names: Sequence[str] | None = None,
    stack_label: str = "session",
    boundaries: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
    shape: tuple[int, int] | None = None,
):
    """One row per component: points factor maps (x, y), frequency factor, time factor(s).

    Parameters
    ----------
    points_x, points_y : ndarray, shape (N, R)
        Points factor for the x and y displacement rows (the ``(xy points)`` factor
        split in two). Painted as tiles around each point over the face image.
    frequency : ndarray, shape (F, R)
    frequencies : ndarray, shape (F,)
        Hz.
    time_panels : mapping of panel title -> sequence of (t, factor)
        One column per panel (one per session for a joint TCA). Each entry is a
        segment: ``t`` (T_k,) seconds, ``factor`` (T_k, R), real or complex. Complex
        factors are drawn as |factor| coloured by phase (cyclic map).
    positions : ndarray, shape (N, 2)
        Home positions (x, y), pixels.
    image : ndarray, optional
        Example frame (H, W, 3) or (H, W).
    evr : ndarray, shape (R,), optional
        Explained variance ratio per component, shown in the row labels.
    stack_factor : ndarray, shape (S, R), optional
        Factor of a stacked axis (e.g. session), drawn as bars.
    stack_names : sequence of str, optional
    boundaries : mapping of panel title -> sequence of float, optional
        Segment start times (s) to mark in each time panel.
    shape : (H, W), optional
        Frame size when no image is given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import Normalize
    from matplotlib.cm import ScalarMappable

    px = np.asarray(points_x)
    py = np.asarray(points_y)
    fr = np.asarray(frequency)
    freqs = np.asarray(frequencies, np.float64)
    R = px.shape[1]
    if py.shape != px.shape or fr.shape[1] != R:
        raise ValueError(f"factor shapes disagree: points_x {px.shape}, points_y {py.shape}, frequency {fr.shape}")
    pos = np.asarray(positions, np.float64)
    if len(pos) != px.shape[0]:
        raise ValueError(f"{len(pos)} positions for a points factor of {px.shape[0]} rows")
    idx_c, img_c = _cropped_point_map(pos, image, shape)
    aspect = idx_c.shape[0] / max(idx_c.shape[1], 1)
    panels = list(time_panels)
    n_time = len(panels)
    ncol = 3 + n_time + (1 if stack_factor is not None else 0)
    map_w = 1.9
    row_h = max(map_w * aspect, 1.55)
    widths = [map_w, map_w, 2.3] + [3.4 if n_time == 1 else 2.6] * n_time + ([1.6] if stack_factor is not None else [])
    signed = bool(np.nanmin(np.real(np.concatenate([px.ravel(), py.ravel()]))) < 0)
    any_complex = False
    with _style():
        fig = new_figure(sum(widths) + 1.2, row_h * R + 1.0)
        axes = fig.subplots(R, ncol, squeeze=False, width_ratios=widths)
        for r in range(R):
            a = axes[r]
            first, last = r == 0, r == R - 1
            _draw_point_maps(fig, a[0], a[1], px, py, r, idx_c, img_c, signed)
            lab = f"C{r + 1}"
            if evr is not None:
                lab += f"\nEVR {100 * float(evr[r]):.1f}%"
            a[0].set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
            any_complex |= _draw_frequency_factor(a[2], freqs, fr[:, r], first, last)
            for p, name in enumerate(panels):
                ax = a[3 + p]
                any_complex |= _draw_time_factor(ax, time_panels[name], r, signed)
                if boundaries and name in boundaries:
                    _boundaries(ax, boundaries[name])
                if not signed:  # non-negative factors: keep zero in view, small wiggles stay small
                    ax.set_ylim(bottom=0)
                if first:
                    ax.set_title(f"time factor: {name}" if n_time > 1 else "time factor")
                if last:
                    ax.set_xlabel("time (s)")
                else:
                    ax.tick_params(labelbottom=False)
            if stack_factor is not None:
                _draw_stack_factor(a[-1], np.asarray(stack_factor)[:, r], stack_names, stack_label, first, last)
        if any_complex:
            cb = fig.colorbar(
                ScalarMappable(Normalize(-np.pi, np.pi), "twilight"),
                ax=axes[:, 2:],
                location="bottom",
                fraction=0.02,
                aspect=60,
                pad=0.01,
            )
            cb.set_label("phase of complex factor (rad); line height = magnitude")
        fig.suptitle(title or "TCA components (descending explained variance)")
    return fig


def _cropped_point_map(pos: np.ndarray, image, shape) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel -> nearest point index map (-1 outside), and the image, both cropped to the
    points' bounding box (plus a margin) so that the face fills the panel."""
    if image is not None:
        hw = np.asarray(image).shape[:2]
    elif shape is not None:
        hw = tuple(shape)
    else:
        hw = (int(np.ceil(pos[:, 1].max())) + 5, int(np.ceil(pos[:, 0].max())) + 5)
    idx = point_index_map(pos, hw)
    ys, xs = np.nonzero(idx >= 0)
    pad = 4
    crop = (
        (slice(max(ys.min() - pad, 0), ys.max() + pad + 1), slice(max(xs.min() - pad, 0), xs.max() + pad + 1))
        if len(ys)
        else (slice(None), slice(None))
    )
    return idx[crop], None if image is None else np.asarray(image)[crop]


def _draw_point_maps(fig, ax_x, ax_y, px, py, r: int, index_map, image, signed: bool) -> None:
    """Component ``r`` of the points factor (x and y rows) painted on the face, with a
    colour bar for real factors."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    vmax = float(np.nanmax(np.abs(np.concatenate([px[:, r], py[:, r]])))) or 1.0
    vmin = -vmax if signed else 0.0
    cmap = "PuOr_r" if signed else "viridis"
    for ax, vals, nm in ((ax_x, px[:, r], "x"), (ax_y, py[:, r], "y")):
        _paint_map(ax, index_map, vals, image, vmin, vmax, cmap)
        if r == 0:
            ax.set_title(f"points, {nm} displacement")
    if not (np.iscomplexobj(px) or np.iscomplexobj(py)):
        cb = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), ax=ax_y, fraction=0.08, pad=0.02)
        cb.ax.tick_params(labelsize=7)
        if r == 0:
            cb.set_label("a.u.", fontsize=8)


def _draw_frequency_factor(ax, freqs: np.ndarray, f: np.ndarray, first: bool, last: bool) -> bool:
    """One component's frequency factor against frequency (log axis). Returns whether
    it is complex (drawn by phase)."""
    is_complex = bool(np.iscomplexobj(f))
    if is_complex:
        _phase_line(ax, freqs, f)
    else:
        ax.plot(freqs, f, color=OKABE_ITO[0], lw=1.5, marker="o", ms=2.5)
    ax.set_xscale("log")
    ax.set_ylim(bottom=min(0.0, float(np.nanmin(np.real(f)))) if not is_complex else 0)
    if first:
        ax.set_title("frequency factor")
    if last:
        ax.set_xlabel("frequency (Hz)")
    else:
        ax.tick_params(labelbottom=False)
    return is_complex


def _draw_time_factor(ax, segments, r: int, signed: bool) -> bool:
    """Component ``r`` of each (t, factor) segment of a time panel, binned for drawing.
    Returns whether any segment is complex (drawn by phase)."""
    any_complex = False
    for t, fac in segments:
        t = np.asarray(t, np.float64)
        y = np.asarray(fac)[:, r]
        if np.iscomplexobj(y):
            any_complex = True
            tb, yb = bin_series(t, y)
            _phase_line(ax, tb, yb, lw=1.0)
        else:
            tb, yb = bin_series(t, y, how="minmax")
            ax.plot(tb, yb, color=OKABE_ITO[1], lw=0.9)
    return any_complex


def _draw_stack_factor(ax, sf: np.ndarray, stack_names, stack_label: str, first: bool, last: bool) -> None:
    """One component's factor of the stacked axis (e.g. session) as bars of |factor|."""
    names = list(stack_names) if stack_names is not None else [str(i) for i in range(len(sf))]
    ax.bar(np.arange(len(sf)), np.abs(sf), color=[OKABE_ITO[i % 8] for i in range(len(sf))])
    ax.set_xticks(np.arange(len(sf)))
    ax.set_xticklabels(names if last else [""] * len(sf), rotation=30, ha="right", fontsize=8)
    if first:
        ax.set_title(f"{stack_label} factor")


def plot_tca_fit(
    evr: np.ndarray,
    errors: np.ndarray,
    evr_model: float | None = None,
    rel_error: float | None = None,
    sweep: Mapping[str, np.ndarray] | None = None,
    title: str | None = None,
):
    """Explained variance per component and reconstruction error per iteration.

    Parameters
    ----------
    evr : ndarray, shape (R,)
        Explained variance ratio of each component (fraction), any order.
    errors : ndarray, shape (n_iter,)
        Relative reconstruction error after each iteration.
    evr_model : float, optional
        Whole-model EVR (fraction).
    rel_error : float, optional
        Final relative error of the ordered model.
    sweep : mapping, optional
        A rank sweep: ``ranks`` (n_r,), ``rel_error`` (n_r, n_s) and optionally
        ``similarity`` (n_r, n_s) across seeds; adds a third panel against rank.

    Returns
    -------
    matplotlib.figure.Figure
    """
    evr = np.asarray(evr, np.float64)
    err = np.asarray(errors, np.float64)
    with _style():
        fig = new_figure(15.0 if sweep is not None else 10.0, 3.6)
        if sweep is not None:
            a, b, c = fig.subplots(1, 3, width_ratios=[1.0, 1.2, 1.2])
            _plot_sweep(c, sweep)
        else:
            a, b = fig.subplots(1, 2, width_ratios=[1.0, 1.2])
        x = np.arange(1, len(evr) + 1)
        a.bar(x, 100 * evr, color=OKABE_ITO[0])
        a.set_xticks(x)
        a.set_xticklabels([f"C{i}" for i in x], fontsize=8)
        a.set_xlabel("component")
        a.set_ylabel("explained variance (%)")
        t = "EVR per component"
        if evr_model is not None:
            t += f" (whole model: {100 * evr_model:.1f}%)"
        a.set_title(t)
        it = np.arange(1, len(err) + 1)
        b.plot(it, err, color=OKABE_ITO[1], lw=1.5)
        if len(err) and np.all(err[np.isfinite(err)] > 0):
            b.set_yscale("log")
        b.set_xlabel("iteration")
        b.set_ylabel("relative reconstruction error")
        t = f"Convergence ({len(err)} iterations"
        if rel_error is not None:
            t += f", final {rel_error:.4g}"
        b.set_title(t + ")")
        b.grid(True, which="both", color="0.9", lw=0.6)
        if title:
            fig.suptitle(title)
    return fig


def _plot_sweep(ax, sweep: Mapping[str, np.ndarray]):
    """Rank sweep: final error per seed (dots) and mean (line); similarity on a twin axis."""
    ranks = np.asarray(sweep["ranks"], np.float64)
    err = np.asarray(sweep["rel_error"], np.float64).reshape(len(ranks), -1)
    for j in range(err.shape[1]):
        ax.plot(ranks, err[:, j], "o", color=OKABE_ITO[1], alpha=0.5, ms=4)
    ax.plot(ranks, np.nanmean(err, axis=1), "-", color=OKABE_ITO[1], lw=1.5, label="error")
    ax.set_xlabel("rank")
    ax.set_ylabel("relative reconstruction error", color=OKABE_ITO[1])
    ax.set_xticks(ranks)
    ax.set_title("Rank sweep (dots: seeds)")
    if "similarity" in sweep:
        sim = np.asarray(sweep["similarity"], np.float64).reshape(len(ranks), -1)
        tw = ax.twinx()
        tw.spines["right"].set_visible(True)
        for j in range(sim.shape[1]):
            tw.plot(ranks, sim[:, j], "s", color=OKABE_ITO[0], alpha=0.5, ms=4)
        tw.plot(ranks, np.nanmean(sim, axis=1), "--", color=OKABE_ITO[0], lw=1.5)
        tw.set_ylim(0, 1.05)
        tw.set_ylabel("similarity to best fit", color=OKABE_ITO[0])
