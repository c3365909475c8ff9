"""Multi-session ROI transfer: carry a template session's ROIs onto another session.

Re-implements the alignment modules of face-rhythm 0.3.3 (``alignment``,
``alignment_multisession``, ``rois.Image_Aligner``; see ``docs/alignment.md``):

1. **Reference image** per session (:mod:`facerhythm_core.reference_image`).
2. **Registration** of a session's reference image to the template session's
   (:mod:`facerhythm_core.registration`).
3. **Quality check** (here): the phase-correlation z-score of
   ``ImageAlignmentChecker``; a session that fails it is reached through other
   sessions (shortest path over the pairwise scores, warps composed along the path).
4. **Warping** of the template's masks, polygons and seed points into the session
   (:mod:`facerhythm_core.warps`, :func:`warp_rois`), and the QC figure (here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .errors import ROIError
from .registration import bandpass_filter_2d, check_image_pair, farneback_flow, phase_correlation, register, taper_2d
from .warps import Registration, warp_image, warp_rois

__all__ = [
    "TransferResult",
    "align_to_template",
    "alignment_score",
    "path_between",
    "qc_figure",
    "score_registration",
    "shortest_paths",
    "warp_rois",
]

logger = logging.getLogger(__name__)


# =========================================================================== quality


def alignment_score(
    im_aligned: np.ndarray,
    im_ref: np.ndarray,
    radius_in: float = 4.0,
    radius_out: float = 20.0,
    order: int = 5,
    window: str | None = "hann",
) -> dict:
    """Phase-correlation z-score of two images that should already be aligned.

    Reference ``ImageAlignmentChecker``: an "in" low-pass (0..radius_in) and an "out"
    band (radius_out..min(H, W)/2) on a near-Chebyshev distance grid (p = 100) weight
    the phase-correlation surface; ``z_in = (max(pc * in) - p95(pc * out)) / std_out``
    with ``std_out = sqrt(mean((pc - mean_out)^2 * out))`` over all pixels (as the
    reference, so its default threshold 4 keeps its meaning).

    Unlike the reference, both images are mean-subtracted and tapered by ``window``
    first: phase correlation whitens the spectrum, and the jumps at the image borders
    (the FFT wraps around) sit at the same place in any two images, so without the
    taper two unrelated textured images score a strong peak at zero shift (z around
    50 on smooth noise). ``window=None`` reproduces the reference.

    Parameters
    ----------
    im_aligned, im_ref : ndarray, shape (H, W)
    radius_in : float
        Shifts up to this many pixels count as aligned.
    radius_out : float
        Inner radius of the null region.
    order : int
        Butterworth order of both masks.
    window : str or None
        Taper (``scipy.signal.get_window`` name).

    Returns
    -------
    dict
        ``z_in``, ``r_in``, ``max_in``, ``ptile95_out``, ``mean_out``, ``std_out`` (floats)
        and ``shift`` (dx, dy) of the in-band peak from the centre.
    """
    a, b = check_image_pair(im_ref, im_aligned)
    shape = a.shape
    filt_in = bandpass_filter_2d(shape, 0.0, float(radius_in), order)
    filt_out = bandpass_filter_2d(shape, float(radius_out), min(shape) / 2, order)
    taper = taper_2d(shape, window)
    pc = phase_correlation((a - a.mean()) * taper, (b - b.mean()) * taper)
    mean_out = float((pc * filt_out).sum() / filt_out.sum())
    sel = filt_out.ravel() > 1e-3
    ptile95_out = float(np.quantile((pc * filt_out).ravel()[sel], 0.95))
    pin = pc * filt_in
    max_in = float(pin.max())
    std_out = float(np.sqrt(np.mean((pc - mean_out) ** 2 * filt_out)))
    diff = max_in - ptile95_out
    r, c = np.unravel_index(int(np.argmax(pin)), shape)
    return {
        "z_in": diff / max(std_out, 1e-30),
        "r_in": diff / ptile95_out if ptile95_out else float("inf"),
        "max_in": max_in,
        "ptile95_out": ptile95_out,
        "mean_out": mean_out,
        "std_out": std_out,
        "shift": (float(c - shape[1] // 2), float(r - shape[0] // 2)),
    }


def score_registration(
    im_template: np.ndarray,
    im_moving: np.ndarray,
    reg: Registration,
    radius_in: float = 4.0,
    radius_out: float = 20.0,
    order: int = 5,
) -> float:
    """z-score of the template warped into the moving frame against the moving image."""
    warped = warp_image(np.asarray(im_template, np.float32), reg, np.shape(im_moving))
    return alignment_score(warped, im_moving, radius_in, radius_out, order)["z_in"]


def shortest_paths(z: np.ndarray, z_threshold: float, source: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dijkstra over pairwise scores: edge weight 1/z where z > threshold, else no edge.

    Parameters
    ----------
    z : ndarray, shape (n, n)
        Symmetric pairwise alignment scores (diagonal ignored).
    z_threshold : float
    source : int

    Returns
    -------
    dist : ndarray, float64, shape (n,)
        Path cost to each node (inf where unreachable).
    predecessors : ndarray, int, shape (n,)
        Previous node on the shortest path from ``source`` (-9999 = none).
    """
    import scipy.sparse
    import scipy.sparse.csgraph

    z = np.asarray(z, np.float64)
    n = len(z)
    ok = np.isfinite(z) & (z > z_threshold) & (z > 0) & ~np.eye(n, dtype=bool)
    ok = ok | ok.T  # scores of a pair count both ways
    zz = np.where(ok, np.fmax(z, z.T), np.nan)
    rows, cols = np.nonzero(ok)
    g = scipy.sparse.csr_matrix((1.0 / zz[rows, cols], (rows, cols)), shape=(n, n))
    dist, pred = scipy.sparse.csgraph.shortest_path(
        g, method="D", directed=True, return_predecessors=True, indices=source
    )
    return dist, pred


def path_between(source: int, target: int, predecessors: np.ndarray) -> list[int] | None:
    """Node list ``[source, ..., target]`` from a predecessor array; None if unreachable."""
    path = [int(target)]
    while path[-1] != source:
        p = int(predecessors[path[-1]])
        if p < 0 or len(path) > len(predecessors):
            return None
        path.append(p)
    return path[::-1]


@dataclass
class TransferResult:
    """Outcome of :func:`align_to_template`.

    Attributes
    ----------
    registration : Registration
        Template -> session warp finally used.
    z_direct : float
        Score of the direct registration (geometric part).
    z_final : float
        Score of the final warp (non-rigid part included), template against session.
    path : list of str
        Node names from the template to the session.
    z_path : float
        Weakest pairwise score along ``path`` (``z_direct`` for a direct path).
    aligned : bool
        ``z_final > z_threshold``, or, for a path through other sessions, every pair
        on it passed (the template and the session may then share too little to be
        scored directly).
    names : list of str
        Nodes of the match search (template, session, others), if it ran.
    z_pairs : ndarray (n, n) or None
        Pairwise scores of the match search.
    """

    registration: Registration
    z_direct: float
    z_final: float
    path: list
    aligned: bool
    z_path: float = float("nan")
    names: list = field(default_factory=list)
    z_pairs: np.ndarray | None = None


def align_to_template(
    template_image: np.ndarray,
    image: np.ndarray,
    others: Mapping[str, np.ndarray] | None = None,
    *,
    template_name: str = "template",
    name: str = "session",
    method: str = "ecc",
    constraint: str = "euclidean",
    nonrigid: bool = False,
    z_threshold: float = 4.0,
    radius_in: float = 4.0,
    radius_out: float = 20.0,
    order: int = 5,
    match_search: bool = True,
    all_to_all: bool = False,
    **register_kwargs,
) -> TransferResult:
    """Register a session's reference image to the template's, with match search.

    The direct registration is scored; if it fails ``z_threshold`` (or ``all_to_all``)
    and ``others`` are given, every pair of {template, session, others} is registered
    and scored, and the warps are composed along the shortest path (edge weight 1/z
    over passing pairs) from the template to the session, as the reference's
    ``Aligner`` match search. The non-rigid refinement, if asked, is fitted last, on
    top of the chosen geometric warp.

    Parameters
    ----------
    template_image, image : ndarray, shape (H, W)
        Reference images of the template session and of the session.
    others : mapping name -> (H, W) image, optional
        Reference images of further sessions to route through.
    method, constraint, nonrigid, register_kwargs
        See :func:`register`.
    z_threshold, radius_in, radius_out, order
        See :func:`alignment_score`.
    match_search, all_to_all : bool

    Returns
    -------
    TransferResult
    """
    kw = dict(method=method, constraint=constraint, **register_kwargs)
    sc = dict(radius_in=radius_in, radius_out=radius_out, order=order)
    direct = register(template_image, image, **kw)
    z_direct = score_registration(template_image, image, direct, **sc)
    logger.info("direct registration %s -> %s: z = %.2f (threshold %.2f)", template_name, name, z_direct, z_threshold)
    reg, path, z_path = direct, [template_name, name], z_direct
    names, zp = [], None
    others = dict(others or {})
    if match_search and others and (z_direct <= z_threshold or all_to_all):
        names = [template_name, name, *others]
        ims = [template_image, image, *others.values()]
        n = len(ims)
        regs: dict[tuple[int, int], Registration] = {(0, 1): direct}
        zp = np.zeros((n, n))
        zp[0, 1] = zp[1, 0] = z_direct
        for i in range(n):
            for j in range(i + 1, n):
                if (i, j) in regs:
                    continue
                try:
                    regs[i, j] = register(ims[i], ims[j], **kw)
                    zp[i, j] = zp[j, i] = score_registration(ims[i], ims[j], regs[i, j], **sc)
                except ROIError as exc:
                    logger.info("match search: %s -> %s failed: %s", names[i], names[j], exc)
        _, pred = shortest_paths(zp, z_threshold, source=0)
        nodes = path_between(0, 1, pred)
        if nodes is None:
            logger.warning("match search found no path of passing pairs from %s to %s", template_name, name)
        else:
            reg = Registration(np.eye(3), None, method, "translation", {"composed": True})
            for a, b in zip(nodes[:-1], nodes[1:]):
                step = regs[a, b] if (a, b) in regs else regs[b, a].inverse()
                reg = reg.then(step)
            reg.info["path"] = [names[k] for k in nodes]
            path = [names[k] for k in nodes]
            z_path = float(min(zp[a, b] for a, b in zip(nodes[:-1], nodes[1:])))
            logger.info("match search path: %s", " -> ".join(path))
    if nonrigid:
        warped = warp_image(np.asarray(template_image, np.float32), reg, np.shape(image))
        reg = Registration(
            reg.matrix,
            farneback_flow(warped, image, register_kwargs.get("farneback_params")),
            reg.method,
            reg.constraint,
            {**reg.info, "nonrigid": "farneback"},
        )
    z_final = score_registration(template_image, image, reg, **sc) if (nonrigid or reg is not direct) else z_direct
    aligned = z_final > z_threshold or (len(path) > 2 and z_path > z_threshold)
    return TransferResult(reg, float(z_direct), float(z_final), path, bool(aligned), float(z_path), names, zp)


# =========================================================================== QC figure


def qc_figure(
    template_image: np.ndarray,
    image: np.ndarray,
    template_rois,
    warped_rois,
    result: TransferResult,
    z_threshold: float,
    title: str = "",
):
    """Matplotlib figure: template with its ROIs, session with the warped ROIs, overlay.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    colours = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00"]
    fig, axs = plt.subplots(1, 3, figsize=(15, 5.2), constrained_layout=True)
    for ax, im, rois, t in [
        (axs[0], template_image, template_rois, "template"),
        (axs[1], image, warped_rois, "session + warped ROIs"),
    ]:
        ax.imshow(im, cmap="gray")
        for i, (k, m) in enumerate(rois.masks.items()):
            ax.contour(m.astype(float), levels=[0.5], colors=colours[i % len(colours)], linewidths=1)
        if rois.point_positions is not None:
            ax.plot(rois.point_positions[:, 0], rois.point_positions[:, 1], ".", ms=3, color="#CC79A7")
        ax.set_title(t)
        ax.set_axis_off()
    warped = warp_image(np.asarray(template_image, np.float32), result.registration, np.shape(image))
    rgb = np.stack(
        [
            warped / max(warped.max(), 1e-12),
            np.asarray(image) / max(np.max(image), 1e-12),
            warped / max(warped.max(), 1e-12),
        ],
        axis=-1,
    )
    axs[2].imshow(np.clip(rgb, 0, 1))
    axs[2].set_title("overlay: warped template (magenta) / session (green)")
    axs[2].set_axis_off()
    verdict = "PASS" if result.aligned else "FAIL"
    fig.suptitle(
        f"{title}  z direct {result.z_direct:.1f}, final {result.z_final:.1f}, "
        f"weakest step {result.z_path:.1f} (threshold {z_threshold:g}) {verdict}; "
        f"path {' -> '.join(result.path)}"
    )
    return fig
