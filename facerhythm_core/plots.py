"""Figures for quality control and results (Matplotlib, headless).

Every ``plot_*`` function takes arrays and returns a :class:`matplotlib.figure.Figure`
built without pyplot (so nothing needs a display and no global figure state is kept);
:func:`save_figure` writes it atomically. Styling (fonts, colour cycle) is applied
through :func:`matplotlib.rc_context` inside each function, never globally.

Colours: the Okabe-Ito palette for lines and ROIs, ``viridis`` / ``magma`` for
magnitudes, ``twilight`` (cyclic) for phases; all are colour-blind safe.
Units: time in seconds, frequency in Hz, positions and displacements in pixels.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

#: Okabe-Ito colours, ordered so that the first ones read well on white
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": None,  # filled in _style()
    "image.cmap": "viridis",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

#: most columns/samples drawn per trace or spectrogram; longer series are binned
MAX_DRAWN = 4000


def _style():
    import matplotlib
    from cycler import cycler

    return matplotlib.rc_context({**STYLE, "axes.prop_cycle": cycler(color=list(OKABE_ITO))})


def new_figure(width: float, height: float):
    """A Figure (inches) with constrained layout and an Agg canvas, no pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` (format from the suffix) through ``atomic_output``."""
    from .io import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


# ----------------------------------------------------------------------------------
# small array helpers (pure)
# ----------------------------------------------------------------------------------


def points_in_masks(positions: np.ndarray, masks: Mapping[str, np.ndarray]) -> dict:
    """Which points fall inside each mask.

    Parameters
    ----------
    positions : ndarray, shape (N, 2)
        (x, y) pixel positions.
    masks : mapping of str -> ndarray, bool, shape (H, W)

    Returns
    -------
    dict of str -> ndarray, bool, shape (N,)
        Points outside the frame are in no mask.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {pos.shape}")
    out = {}
    for name, m in masks.items():
        m = np.asarray(m, dtype=bool)
        h, w = m.shape
        xi = np.round(pos[:, 0]).astype(np.int64)
        yi = np.round(pos[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        sel = np.zeros(len(pos), bool)
        sel[inside] = m[yi[inside], xi[inside]]
        out[name] = sel
    return out


def typical_spacing(positions: np.ndarray) -> float:
    """Median distance from each point to its nearest neighbour (pixels); 1 for < 2 points."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        return 1.0
    d, _ = cKDTree(pos).query(pos, k=2)
    return float(max(np.median(d[:, 1]), 1.0))


def point_index_map(positions: np.ndarray, shape: tuple[int, int], radius: float | None = None) -> np.ndarray:
    """Nearest-point index for every pixel within ``radius`` of a point (else -1).

    Used to paint per-point values as tiles, so a factor reads as a map of the face.

    Parameters
    ----------
    positions : ndarray, shape (N, 2)
        (x, y) pixel positions.
    shape : (H, W)
    radius : float, optional
        Largest distance (pixels) painted around a point; default 0.75 x the typical
        point spacing, which makes grid tiles touch.

    Returns
    -------
    ndarray, int64, shape (H, W)
    """
    from scipy.spatial import cKDTree

    h, w = int(shape[0]), int(shape[1])
    out = np.full((h, w), -1, np.int64)
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) == 0:
        return out
    r = 0.75 * typical_spacing(pos) if radius is None else float(radius)
    x0 = max(int(math.floor(pos[:, 0].min() - r)), 0)
    x1 = min(int(math.ceil(pos[:, 0].max() + r)) + 1, w)
    y0 = max(int(math.floor(pos[:, 1].min() - r)), 0)
    y1 = min(int(math.ceil(pos[:, 1].max() + r)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d, idx = cKDTree(pos).query(np.column_stack([xx.ravel(), yy.ravel()]), distance_upper_bound=r)
    idx[~np.isfinite(d)] = -1
    out[y0:y1, x0:x1] = idx.reshape(yy.shape)
    return out


def choose_example_points(motion: np.ndarray, k: int = 4, valid: np.ndarray | None = None) -> np.ndarray:
    """Pick ``k`` points that span the range of motion: the most mobile, then quantiles.

    Parameters
    ----------
    motion : ndarray, shape (N,)
        A per-point motion size, e.g. the std of the displacement in pixels.
    k : int
    valid : ndarray, bool, shape (N,), optional
        Points allowed (e.g. never violating); all if None or if none is valid.

    Returns
    -------
    ndarray, int64, shape (min(k, N),)
        Point indices, most mobile first, no repeats.
    """
    motion = np.asarray(motion, dtype=np.float64)
    n = len(motion)
    if n == 0 or k < 1:
        return np.zeros(0, np.int64)
    cand = np.arange(n) if valid is None or not np.any(valid) else np.flatnonzero(valid)
    order = cand[np.argsort(-np.nan_to_num(motion[cand], nan=-np.inf), kind="stable")]
    k = min(k, len(order))
    # evenly spaced ranks: the most mobile point, then down to the least mobile
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[picks].astype(np.int64)


def bin_series(
    t: np.ndarray, y: np.ndarray, max_points: int = MAX_DRAWN, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a long series to at most ``max_points`` bins along axis 0.

    ``how`` = "mean", "max" (keeps rare events visible) or "minmax" (an envelope:
    two samples per bin, the min and the max, so the drawn line keeps its extent).
    """
    t = np.asarray(t)
    y = np.asarray(y)
    n = len(t)
    if n <= max_points:
        return t, y
    per = 2 if how == "minmax" else 1
    step = int(math.ceil(n * per / max_points))
    m = n // step
    tb = t[: m * step].reshape(m, step).mean(axis=1)
    yb = y[: m * step].reshape((m, step) + y.shape[1:])
    if how == "mean":
        return tb, yb.mean(axis=1)
    if how == "max":
        return tb, yb.max(axis=1)
    if how == "minmax":
        lo, hi = yb.min(axis=1), yb.max(axis=1)
        return np.repeat(tb, 2), np.stack([lo, hi], axis=1).reshape((2 * m,) + y.shape[1:])
    raise ValueError(f"how must be 'mean', 'max' or 'minmax', got {how!r}")


def segment_offsets(num_frames: Sequence[int], frame_rate: float) -> np.ndarray:
    """Start time (s) of each video within the session: cumulative durations."""
    n = np.asarray(num_frames, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(n)[:-1]]) / float(frame_rate)


# ----------------------------------------------------------------------------------
# drawing helpers
# ----------------------------------------------------------------------------------


def _show_gray(ax, image: np.ndarray | None, shape=None):
    if image is None:
        if shape is None:
            return
        image = np.zeros(shape, np.uint8)
    img = np.asarray(image)
    if img.ndim == 3:
        img = img.mean(axis=2)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255 if img.max() > 1 else 1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _boundaries(ax, starts: Sequence[float], labels: Sequence[str] | None = None):
    """Dashed lines where each video after the first begins."""
    for i, s in enumerate(starts):
        if i == 0:
            continue
        ax.axvline(s, color="0.45", lw=0.8, ls="--", zorder=0)
        if labels is not None:
            ax.text(
                s,
                1.0,
                f" {labels[i]}",
                transform=ax.get_xaxis_transform(),
                fontsize=7.5,
                color="0.35",
                va="top",
                ha="left",
            )


def _phase_line(ax, t: np.ndarray, z: np.ndarray, lw: float = 1.5):
    """|z| against t, coloured by arg(z) on the cyclic twilight map. Returns the collection."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    mag = np.abs(z)
    pts = np.column_stack([t, mag]).reshape(-1, 1, 2)
    segs = np.concatenate([pts[:-1], pts[1:]], axis=1)
    lc = LineCollection(segs, cmap="twilight", norm=Normalize(-np.pi, np.pi), linewidths=lw)
    lc.set_array(np.angle(z[:-1] + z[1:]) if len(z) > 1 else np.angle(z))
    ax.add_collection(lc)
    ax.autoscale_view()
    return lc


def phase_rgba(z: np.ndarray, mag_max: float | None = None) -> np.ndarray:
    """Colour complex values: hue = phase (twilight, cyclic), opacity = |z| / max.

    Returns
    -------
    ndarray, float, shape z.shape + (4,)
    """
    from matplotlib import colormaps

    z = np.asarray(z)
    mag = np.abs(z)
    mmax = float(np.nanmax(mag)) if mag_max is None else float(mag_max)
    rgba = colormaps["twilight"]((np.angle(z) + np.pi) / (2 * np.pi))
    rgba[..., 3] = np.clip(mag / mmax, 0, 1) if mmax > 0 else 0.0
    return rgba


def _paint_map(ax, index_map: np.ndarray, values: np.ndarray, image, vmin, vmax, cmap):
    """Per-point ``values`` painted through ``index_map`` over the gray image."""
    _show_gray(ax, image, index_map.shape)
    inside = index_map >= 0
    if np.iscomplexobj(values):
        rgba = np.zeros(index_map.shape + (4,))
        rgba[inside] = phase_rgba(values, vmax)[index_map[inside]]
        return ax.imshow(rgba, interpolation="nearest")
    img = np.full(index_map.shape, np.nan)
    img[inside] = np.asarray(values, np.float64)[index_map[inside]]
    return ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", alpha=0.9)


# ----------------------------------------------------------------------------------
# ROIs
# ----------------------------------------------------------------------------------


def plot_rois(
    image: np.ndarray,
    masks: Mapping[str, np.ndarray],
    points: np.ndarray,
    tracking_mask: np.ndarray | None = None,
    title: str | None = None,
):
    """ROI masks (filled outlines) and seed points on the example frame.

    Parameters
    ----------
    image : ndarray, uint8, shape (H, W, 3) or (H, W)
    masks : mapping of name -> ndarray, bool, shape (H, W)
    points : ndarray, shape (N, 2)
        Seed points (x, y) in pixels.
    tracking_mask : ndarray, bool, shape (H, W), optional
        Drawn as a dashed white outline.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    img = np.asarray(image)
    h, w = img.shape[:2]
    with _style():
        fig = new_figure(7.0, 7.0 * h / w + 0.9)
        ax = fig.add_subplot()
        ax.imshow(img if img.ndim == 3 else img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        handles = []
        for i, (name, m) in enumerate(masks.items()):
            c = OKABE_ITO[(i + 1) % len(OKABE_ITO)] if i else OKABE_ITO[4]
            m = np.asarray(m, bool)
            fill = np.zeros((h, w, 4))
            fill[m] = to_rgba(c, 0.18)
            ax.imshow(fill, interpolation="nearest")
            ax.contour(m.astype(float), levels=[0.5], colors=[c], linewidths=1.6)
            handles.append(Patch(facecolor=to_rgba(c, 0.3), edgecolor=c, label=f"{name} ({int(m.sum())} px)"))
        if tracking_mask is not None:
            ax.contour(
                np.asarray(tracking_mask, float), levels=[0.5], colors=["white"], linewidths=1.0, linestyles="--"
            )
            handles.append(Line2D([], [], color="0.3", ls="--", label="tracking mask"))
        pts = np.asarray(points)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=OKABE_ITO[5], edgecolors="black", linewidths=0.3, zorder=3)
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color=OKABE_ITO[5],
                markeredgecolor="black",
                label=f"seed points (N = {len(pts)})",
            )
        )
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(handles), 3), frameon=False
        )
        ax.set_title(title or "ROIs and seed points")
    return fig


# ----------------------------------------------------------------------------------
# tracking QC
# ----------------------------------------------------------------------------------


def plot_violations(
    violating: Sequence[np.ndarray],
    frame_rate: float,
    offsets: Sequence[float] | None = None,
    fractions: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """Share of points flagged as violating in every frame, over session time.

    Parameters
    ----------
    violating : sequence of ndarray, shape (T_i,)
        Per tracked segment (video, or the whole session when contiguous): the
        fraction of points violating in each frame, in [0, 1].
    frame_rate : float
        Hz.
    offsets : sequence of float, optional
        Start time (s) of each segment in the session; default back to back.
    fractions : sequence of float, optional
        Each segment's ``violation_fraction`` (share of frames with any violation),
        printed in the legend.
    labels : sequence of str, optional
        Segment names (default "video 1", ...).

    Returns
    -------
    matplotlib.figure.Figure
    """
    segs = [np.asarray(v, np.float64) for v in violating]
    if offsets is None:
        offsets = segment_offsets([len(v) for v in segs], frame_rate)
    labels = list(labels) if labels is not None else [f"video {i + 1}" for i in range(len(segs))]
    with _style():
        fig = new_figure(8.0, 3.2)
        ax = fig.add_subplot()
        for i, (v, t0) in enumerate(zip(segs, offsets)):
            t = t0 + np.arange(len(v)) / frame_rate
            tb, vb = bin_series(t, v * 100.0, how="max")
            lab = labels[i]
            if fractions is not None:
                lab += f": {100 * fractions[i]:.2f}% of frames with any violation"
            c = OKABE_ITO[i % len(OKABE_ITO)]
            ax.fill_between(tb, 0, vb, step="mid", color=c, alpha=0.35, lw=0)
            ax.step(tb, vb, where="mid", color=c, lw=1.0, label=lab)
        _boundaries(ax, offsets, labels)
        ax.set_xlabel("time in session (s)")
        ax.set_ylabel("points violating (%)")
        top = max([float(np.max(v)) * 100 for v in segs if len(v)] + [0.0])
        ax.set_ylim(0, max(top * 1.15, 1.0))
        if top == 0:
            ax.text(
                0.5, 0.5, "no violations", transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=12
            )
        ax.legend(loc="upper right")
        ax.set_title(title or "Tracking QC: points flagged as violating (displacement above threshold)")
    return fig


def plot_displacement_traces(
    traces: Sequence[np.ndarray],
    frame_rate: float,
    point_ids: Sequence[int],
    positions: np.ndarray,
    image: np.ndarray | None = None,
    offsets: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """Displacement from home of a few example points, with a map of where they are.

    Parameters
    ----------
    traces : sequence of ndarray, shape (T_i, k, 2)
        Per segment: displacement (x, y) in pixels of the k example points.
    frame_rate : float
        Hz.
    point_ids : sequence of int, length k
        Indices of the example points (for labels).
    positions : ndarray, shape (k, 2)
        Home positions (x, y) of the example points.
    image : ndarray, optional
        Example frame, (H, W, 3) or (H, W).
    offsets, labels
        As :func:`plot_violations`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    segs = [np.asarray(a, np.float64) for a in traces]
    k = len(point_ids)
    if offsets is None:
        offsets = segment_offsets([len(a) for a in segs], frame_rate)
    with _style():
        fig = new_figure(11.0, 4.6)
        gs = fig.add_gridspec(2, 3, width_ratios=[1.0, 2.2, 2.2] if image is not None else [0.01, 2.2, 2.2])
        axm = fig.add_subplot(gs[:, 0])
        axx = fig.add_subplot(gs[0, 1:])
        axy = fig.add_subplot(gs[1, 1:], sharex=axx)
        pos = np.asarray(positions, np.float64).reshape(-1, 2)
        if image is not None:
            _show_gray(axm, image)
            for j in range(k):
                c = OKABE_ITO[j % len(OKABE_ITO)]
                axm.plot(pos[j, 0], pos[j, 1], "o", ms=7, mfc=c, mec="white", mew=1.2)
                axm.annotate(
                    str(point_ids[j]),
                    pos[j],
                    xytext=(5, 5),
                    textcoords="offset points",
                    color="white",
                    fontsize=8.5,
                    fontweight="bold",
                )
            axm.set_title("example points")
        else:
            axm.axis("off")
        for ax, d, name in ((axx, 0, "x"), (axy, 1, "y")):
            for i, (a, t0) in enumerate(zip(segs, offsets)):
                t = t0 + np.arange(len(a)) / frame_rate
                for j in range(k):
                    tb, yb = bin_series(t, a[:, j, d], how="minmax")
                    ax.plot(
                        tb,
                        yb,
                        color=OKABE_ITO[j % len(OKABE_ITO)],
                        lw=0.8,
                        label=f"point {point_ids[j]}" if (i == 0 and d == 0) else None,
                    )
            _boundaries(ax, offsets, labels if d == 0 else None)
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set_ylabel(f"{name} displacement (px)")
        axy.set_xlabel("time in session (s)")
        axx.tick_params(labelbottom=False)
        axx.legend(loc="upper right", ncol=min(k, 4))
        fig.suptitle(title or "Tracking QC: displacement from home position")
    return fig


# ----------------------------------------------------------------------------------
# spectral QC
# ----------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------
# TCA
# ----------------------------------------------------------------------------------


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
    if image is not None:
        hw = np.asarray(image).shape[:2]
    elif shape is not None:
        hw = tuple(shape)
    else:
        hw = (int(np.ceil(pos[:, 1].max())) + 5, int(np.ceil(pos[:, 0].max())) + 5)
    idx = point_index_map(pos, hw)
    # crop the maps to the points' bounding box so the face fills the panel
    ys, xs = np.nonzero(idx >= 0)
    pad = 4
    crop = (
        (slice(max(ys.min() - pad, 0), ys.max() + pad + 1), slice(max(xs.min() - pad, 0), xs.max() + pad + 1))
        if len(ys)
        else (slice(None), slice(None))
    )
    idx_c = idx[crop]
    img_c = None if image is None else np.asarray(image)[crop]
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
            vmax = float(np.nanmax(np.abs(np.concatenate([px[:, r], py[:, r]])))) or 1.0
            vmin = -vmax if signed else 0.0
            cmap = "PuOr_r" if signed else "viridis"
            for j, (vals, nm) in enumerate(((px[:, r], "x"), (py[:, r], "y"))):
                _paint_map(a[j], idx_c, vals, img_c, vmin, vmax, cmap)
                if r == 0:
                    a[j].set_title(f"points, {nm} displacement")
            if not (np.iscomplexobj(px) or np.iscomplexobj(py)):
                cb = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), ax=a[1], fraction=0.08, pad=0.02)
                cb.ax.tick_params(labelsize=7)
                if r == 0:
                    cb.set_label("a.u.", fontsize=8)
            lab = f"C{r + 1}"
            if evr is not None:
                lab += f"\nEVR {100 * float(evr[r]):.1f}%"
            a[0].set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
            ax = a[2]
            f = fr[:, r]
            if np.iscomplexobj(f):
                any_complex = True
                _phase_line(ax, freqs, f)
            else:
                ax.plot(freqs, f, color=OKABE_ITO[0], lw=1.5, marker="o", ms=2.5)
            ax.set_xscale("log")
            ax.set_ylim(bottom=min(0.0, float(np.nanmin(np.real(f)))) if not np.iscomplexobj(f) else 0)
            if r == 0:
                ax.set_title("frequency factor")
            if r == R - 1:
                ax.set_xlabel("frequency (Hz)")
            else:
                ax.tick_params(labelbottom=False)
            for p, name in enumerate(panels):
                ax = a[3 + p]
                for t, fac in time_panels[name]:
                    t = np.asarray(t, np.float64)
                    y = np.asarray(fac)[:, r]
                    if np.iscomplexobj(y):
                        any_complex = True
                        tb, yb = bin_series(t, y)
                        _phase_line(ax, tb, yb, lw=1.0)
                    else:
                        tb, yb = bin_series(t, y, how="minmax")
                        ax.plot(tb, yb, color=OKABE_ITO[1], lw=0.9)
                if boundaries and name in boundaries:
                    _boundaries(ax, boundaries[name])
                if not signed:  # non-negative factors: keep zero in view, small wiggles stay small
                    ax.set_ylim(bottom=0)
                if r == 0:
                    ax.set_title(f"time factor: {name}" if n_time > 1 else "time factor")
                if r == R - 1:
                    ax.set_xlabel("time (s)")
                else:
                    ax.tick_params(labelbottom=False)
            if stack_factor is not None:
                ax = a[-1]
                sf = np.asarray(stack_factor)[:, r]
                names = list(stack_names) if stack_names is not None else [str(i) for i in range(len(sf))]
                ax.bar(np.arange(len(sf)), np.abs(sf), color=[OKABE_ITO[i % 8] for i in range(len(sf))])
                ax.set_xticks(np.arange(len(sf)))
                ax.set_xticklabels(names if r == R - 1 else [""] * len(sf), rotation=30, ha="right", fontsize=8)
                if r == 0:
                    ax.set_title(f"{stack_label} factor")
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


# ----------------------------------------------------------------------------------
# events
# ----------------------------------------------------------------------------------


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
