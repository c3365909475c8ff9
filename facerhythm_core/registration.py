"""Registration of a session's reference image to the template's: estimating a warp.

Re-implements the registration of face-rhythm 0.3.3 (``alignment``,
``rois.Image_Aligner``; ``docs/alignment.md``): phase correlation (translation), ECC
via OpenCV (translation / euclidean / affine / homography, retried with a larger
Gaussian pre-filter on failure) or identity, optionally refined by Farneback optical
flow. The result is a :class:`~facerhythm_core.warps.Registration` (template ->
session coordinates).
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError, ROIError
from .warps import CONSTRAINTS, Registration, warp_image

logger = logging.getLogger(__name__)

METHODS = ("ecc", "phase_correlation", "identity")

#: ROICaT/face-rhythm ``OpticalFlowFarneback`` defaults
DEFAULT_FARNEBACK = dict(pyr_scale=0.7, levels=5, winsize=128, iterations=15, poly_n=5, poly_sigma=1.5)


def check_image_pair(im_template: np.ndarray, im_moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float32 (H, W), checked: 2-D, one shape, finite."""
    a = np.asarray(im_template, np.float32)
    b = np.asarray(im_moving, np.float32)
    if a.ndim != 2 or b.ndim != 2:
        raise ROIError(f"registration needs 2-D gray images, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ROIError(
            f"the template image is {a.shape[1]}x{a.shape[0]} but the session image is "
            f"{b.shape[1]}x{b.shape[0]}: ROI transfer needs sessions filmed at one frame size"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ROIError("registration images contain NaN or inf")
    return a, b


def distance_grid(shape: tuple[int, int], p: float = 2.0) -> np.ndarray:
    """Minkowski-p distance of each pixel to the fftshift centre (H // 2, W // 2).

    Large ``p`` approaches the Chebyshev (max) distance; computed without overflow.
    """
    h, w = shape
    dy = np.abs(np.arange(h) - h // 2)[:, None].astype(np.float64) * np.ones((1, w))
    dx = np.abs(np.arange(w) - w // 2)[None, :].astype(np.float64) * np.ones((h, 1))
    if math.isinf(p):
        return np.maximum(dx, dy)
    m = np.maximum(np.maximum(dx, dy), 1e-300)
    return m * ((dx / m) ** p + (dy / m) ** p) ** (1.0 / p)


def bandpass_filter_2d(
    shape: tuple[int, int], low: float, high: float, order: int = 5, distance_p: float = 100.0
) -> np.ndarray:
    """Butterworth magnitude response laid out on a distance grid (fftshifted, in [0, 1]).

    The 1-D filter is designed with sample rate ``max(H, W)`` so that cut-offs are in
    pixels of distance from the centre (reference ``make_2D_frequency_filter``):
    ``low <= 0`` gives a low-pass, ``high >= max(H, W) / 2`` a high-pass.

    Returns
    -------
    ndarray, float64, shape (H, W)
    """
    import scipy.signal

    fs = float(max(shape))
    nyq = fs / 2
    if low <= 0 and high >= nyq:
        return np.ones(shape)
    if low <= 0:
        sos = scipy.signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
    elif high >= nyq:
        sos = scipy.signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        if not low < high:
            raise ConfigError(f"band-pass needs low < high, got [{low}, {high}]")
        sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    w, h = scipy.signal.sosfreqz(sos, worN=int(max(shape)) * 10, fs=fs)
    return np.interp(distance_grid(shape, distance_p), w, np.abs(h))


def phase_correlation(
    im_template: np.ndarray, im_moving: np.ndarray, mask_fft: np.ndarray | None = None, eps: float = 1e-8
) -> np.ndarray:
    """Phase-correlation surface, fftshifted: the peak sits at centre + shift.

    If ``im_moving`` is ``im_template`` moved by (dx, dy), the peak is at
    ``(H // 2 + dy, W // 2 + dx)``.

    Parameters
    ----------
    im_template, im_moving : ndarray, shape (..., H, W)
    mask_fft : ndarray, shape (H, W), optional
        fftshifted frequency mask (e.g. :func:`bandpass_filter_2d`).

    Returns
    -------
    ndarray, float64, shape (..., H, W)
    """
    fa = np.fft.fft2(np.asarray(im_template, np.float64))
    fb = np.fft.fft2(np.asarray(im_moving, np.float64))
    if mask_fft is not None:
        m = np.fft.ifftshift(np.asarray(mask_fft, np.float64))
        fa, fb = fa * m, fb * m
    r = np.conj(fa) * fb
    r = r / (np.abs(r) + eps)
    return np.fft.fftshift(np.fft.ifft2(r).real, axes=(-2, -1))


def _subpixel_peak(cc: np.ndarray) -> tuple[float, float]:
    """(row, col) of the maximum, refined by a 3-point parabola per axis."""
    h, w = cc.shape
    r, c = np.unravel_index(int(np.argmax(cc)), cc.shape)

    def refine(m1, z, p1):
        d = m1 - 2 * z + p1
        return 0.0 if d >= 0 else float(np.clip(0.5 * (m1 - p1) / d, -0.5, 0.5))

    dr = refine(cc[(r - 1) % h, c], cc[r, c], cc[(r + 1) % h, c])
    dc = refine(cc[r, (c - 1) % w], cc[r, c], cc[r, (c + 1) % w])
    return r + dr, c + dc


def register_phase_correlation(
    im_template: np.ndarray,
    im_moving: np.ndarray,
    bandpass: Sequence[float] | None = None,
    order: int = 5,
    window: str | None = "hann",
) -> Registration:
    """Translation from the phase-correlation peak (sub-pixel, parabolic refinement).

    Both images are mean-subtracted and tapered by a 2-D window first, so that the
    image borders (which FFTs treat as periodic) do not make false peaks; the
    reference uses no window (``window=None``).

    Parameters
    ----------
    im_template, im_moving : ndarray, shape (H, W)
    bandpass : (low, high) or None
        Optional Butterworth band-pass in the frequency domain, in pixels of distance
        from the FFT centre (reference default when used: [1, 30]).
    order : int
        Butterworth order.
    window : str or None
        ``scipy.signal.get_window`` name of the taper, or None.
    """
    a, b = check_image_pair(im_template, im_moving)
    mask = None if bandpass is None else bandpass_filter_2d(a.shape, bandpass[0], bandpass[1], order)
    taper = taper_2d(a.shape, window)
    cc = phase_correlation((a - a.mean()) * taper, (b - b.mean()) * taper, mask)
    r, c = _subpixel_peak(cc)
    dy, dx = r - a.shape[0] // 2, c - a.shape[1] // 2
    m = np.eye(3)
    m[0, 2], m[1, 2] = dx, dy
    return Registration(m, None, "phase_correlation", "translation", {"peak": float(cc.max())})


_ECC_MODES = {
    "translation": "MOTION_TRANSLATION",
    "euclidean": "MOTION_EUCLIDEAN",
    "affine": "MOTION_AFFINE",
    "homography": "MOTION_HOMOGRAPHY",
}


def register_ecc(
    im_template: np.ndarray,
    im_moving: np.ndarray,
    constraint: str = "euclidean",
    n_iter: int = 200,
    termination_eps: float = 1e-9,
    gauss_filt_size: int = 1,
    retry_step: int = 10,
    max_retries: int = 10,
    init: np.ndarray | None = None,
) -> Registration:
    """ECC registration with ``cv2.findTransformECC`` (reference ``ECC_cv2``).

    On failure (no convergence) the Gaussian pre-filter grows by ``retry_step`` and
    ECC runs again, at most ``max_retries`` times (the reference allows 100).

    Parameters
    ----------
    im_template, im_moving : ndarray, shape (H, W)
    constraint : {'translation', 'euclidean', 'affine', 'homography'}
    n_iter, termination_eps : ECC stopping criteria (reference 200, 1e-9).
    gauss_filt_size : int
        Initial Gaussian pre-filter size (made odd).
    retry_step : int
        Growth of the filter per retry (0 disables retries).
    max_retries : int
    init : ndarray (3, 3), optional
        Initial template -> moving matrix (e.g. from phase correlation).

    Raises
    ------
    ROIError
        ECC failed with every filter size tried.
    """
    import cv2

    if constraint not in _ECC_MODES:
        raise ConfigError(f"alignment.constraint must be one of {CONSTRAINTS}, got {constraint!r}")
    a, b = check_image_pair(im_template, im_moving)
    mode = getattr(cv2, _ECC_MODES[constraint])
    m0 = np.eye(3) if init is None else np.asarray(init, np.float64)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, int(n_iter), float(termination_eps))
    size = int(gauss_filt_size)
    last_exc = None
    for attempt in range(max(0, int(max_retries)) + 1 if retry_step else 1):
        size_odd = size if size % 2 == 1 else size + 1
        warp = (m0 if constraint == "homography" else m0[:2]).astype(np.float32).copy()
        try:
            cc, warp = cv2.findTransformECC(a, b, warp, mode, criteria, None, size_odd)
        except cv2.error as exc:
            last_exc = exc
            logger.info(
                "ECC failed with gaussFiltSize=%d (%s); retrying larger",
                size_odd,
                str(exc).strip().splitlines()[-1][:120],
            )
            size += int(retry_step)
            continue
        if not np.isfinite(warp).all():
            last_exc = RuntimeError("non-finite warp")
            size += int(retry_step)
            continue
        m = np.eye(3)
        if constraint == "homography":
            m = warp.astype(np.float64)
            m = m / m[2, 2]
        else:
            m[:2] = warp
        return Registration(
            m, None, "ecc", constraint, {"ecc_cc": float(cc), "gauss_filt_size": size_odd, "retries": attempt}
        )
    raise ROIError(
        f"ECC registration ({constraint}) did not converge, last gaussFiltSize {size_odd}: "
        f"{last_exc}. Try alignment.method: phase_correlation or a simpler constraint"
    )


def farneback_flow(im_template_warped: np.ndarray, im_moving: np.ndarray, params: Mapping | None = None) -> np.ndarray:
    """Farneback optical flow from a (geometrically pre-aligned) template to the moving image.

    Returns
    -------
    ndarray, float32, shape (H, W, 2)
        ``flow(q)``: the content at ``q`` in the warped template is at ``q + flow(q)``
        in the moving image.
    """
    import cv2

    p = {**DEFAULT_FARNEBACK, **(params or {})}
    a, b = check_image_pair(im_template_warped, im_moving)

    def u8(x):
        lo, hi = np.percentile(x, [0.5, 99.5])
        return np.clip(np.round((x - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)

    return cv2.calcOpticalFlowFarneback(
        u8(a),
        u8(b),
        None,
        p["pyr_scale"],
        int(p["levels"]),
        int(p["winsize"]),
        int(p["iterations"]),
        int(p["poly_n"]),
        float(p["poly_sigma"]),
        0,
    ).astype(np.float32)


def register(
    im_template: np.ndarray,
    im_moving: np.ndarray,
    method: str = "ecc",
    constraint: str = "euclidean",
    nonrigid: bool = False,
    init_phase_correlation: bool = True,
    bandpass: Sequence[float] | None = None,
    ecc_params: Mapping | None = None,
    farneback_params: Mapping | None = None,
) -> Registration:
    """Register ``im_moving`` to ``im_template`` with one method, optionally non-rigid on top.

    Parameters
    ----------
    im_template, im_moving : ndarray, float, shape (H, W)
    method : {'ecc', 'phase_correlation', 'identity'}
    constraint : {'translation', 'euclidean', 'affine', 'homography'}
        ECC warp family; phase correlation is translation only and identity has none.
    nonrigid : bool
        Add a Farneback flow field after the geometric warp.
    init_phase_correlation : bool
        Start ECC from the phase-correlation translation (ECC is a local optimiser;
        the reference starts from identity).
    bandpass : (low, high) or None
        Phase-correlation band-pass (see :func:`register_phase_correlation`).
    ecc_params : mapping
        Keyword arguments of :func:`register_ecc`.
    farneback_params : mapping
        ``cv2.calcOpticalFlowFarneback`` parameters (:data:`DEFAULT_FARNEBACK`).

    Returns
    -------
    Registration
    """
    a, b = check_image_pair(im_template, im_moving)
    if method == "identity":
        reg = Registration(np.eye(3), None, "identity", "translation", {})
    elif method == "phase_correlation":
        if constraint != "translation":
            logger.info("phase correlation estimates a translation only (constraint %r ignored)", constraint)
        reg = register_phase_correlation(a, b, bandpass)
    elif method == "ecc":
        init = register_phase_correlation(a, b, bandpass).matrix if init_phase_correlation else None
        reg = register_ecc(a, b, constraint, init=init, **(ecc_params or {}))
    else:
        raise ConfigError(f"alignment.method must be one of {METHODS} (RoMa is not supported), got {method!r}")
    if nonrigid:
        warped = warp_image(a, reg, a.shape)
        reg = Registration(
            reg.matrix,
            farneback_flow(warped, b, farneback_params),
            reg.method,
            reg.constraint,
            {**reg.info, "nonrigid": "farneback"},
        )
    return reg


def taper_2d(shape: tuple[int, int], window: str | None):
    """Outer product of two ``scipy.signal.get_window`` tapers, shape (H, W); 1.0 for None."""
    import scipy.signal

    if window is None:
        return 1.0
    return np.outer(
        scipy.signal.get_window(window, shape[0], fftbins=False),
        scipy.signal.get_window(window, shape[1], fftbins=False),
    )
