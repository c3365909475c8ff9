"""Figures of a session's ROIs and tracking QC: ROI masks and seed points, the share
of violating points over time, displacement traces of example points."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..keys import start_offsets
from .arrays import bin_series
from .style import OKABE_ITO, _boundaries, _show_gray, _style, new_figure


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
        offsets = start_offsets([len(v) for v in segs], frame_rate)
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
        offsets = start_offsets([len(a) for a in segs], frame_rate)
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
