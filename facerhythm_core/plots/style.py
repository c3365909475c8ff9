"""The figures' shared look and drawing primitives: the Okabe-Ito palette and rc
style (applied per figure, never globally), pyplot-free figures and atomic saving, and
the axes helpers every figure uses (gray frame, video boundaries, phase-coloured lines
and maps)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

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
    from ..io import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


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
