"""Multi-session ROI transfer: reference images, registration, quality check, warping.

Re-implements the alignment modules of face-rhythm 0.3.3 (``alignment``,
``alignment_multisession``, ``rois.Image_Aligner``; see ``docs/alignment.md``):

1. **Reference image** per session (``Image_preparation_pipeline``): downsample the
   frames, score each time bin by the mean VQT magnitude of the pixel traces, keep the
   quietest ``ptile_keep`` percent (frames without behaviour), average them at full
   resolution, square-root, scale to max 1, CLAHE.
2. **Registration** of a session's reference image to the template session's:
   phase correlation (translation), ECC via OpenCV (translation / euclidean / affine /
   homography, retried with a larger Gaussian pre-filter on failure) or identity,
   optionally refined by Farneback optical flow.
3. **Quality check**: the phase-correlation z-score of ``ImageAlignmentChecker``; a
   session that fails it is reached through other sessions (shortest path over the
   pairwise scores, warps composed along the path).
4. **Warping** of the template's masks, polygons and seed points into the session.

Conventions
-----------
Coordinates are (x, y) pixels with pixel centres at integers. A
:class:`Registration` maps **template** coordinates to **moving** (session)
coordinates: a feature at template point ``p`` is found at ``warp_points(p)`` in the
session. ``matrix`` is the 3x3 homogeneous part; ``flow`` (optional, non-rigid) is a
displacement field on the session grid added after the matrix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError, ROIError

logger = logging.getLogger(__name__)

METHODS = ("ecc", "phase_correlation", "identity")
CONSTRAINTS = ("translation", "euclidean", "affine", "homography")

#: reference ``Image_preparation_pipeline`` VQT parameters (Fs is the session's rate here)
DEFAULT_VQT = dict(
    q_low_f=3.5, q_high_f=20.0, f_min=0.5, f_max=60.0, n_freq_bins=50, window_type="hann", downsample_factor=10
)

#: ROICaT/face-rhythm ``OpticalFlowFarneback`` defaults
DEFAULT_FARNEBACK = dict(pyr_scale=0.7, levels=5, winsize=128, iterations=15, poly_n=5, poly_sigma=1.5)


# =========================================================================== reference image


def downsample_frames(frames: np.ndarray, ds_factor: int) -> np.ndarray:
    """Average colour channels and bilinearly shrink each frame by ``ds_factor``.

    Parameters
    ----------
    frames : ndarray, shape (n, H, W) or (n, H, W, C)
    ds_factor : int
        Output is (n, H // ds_factor, W // ds_factor).

    Returns
    -------
    ndarray, float32, shape (n, H // ds, W // ds)
    """
    import cv2

    f = np.asarray(frames)
    if f.ndim == 4:
        f = f.mean(axis=-1)
    if f.ndim != 3:
        raise ValueError(f"frames must be (n, H, W) or (n, H, W, C), got shape {np.shape(frames)}")
    ds = int(ds_factor)
    h, w = f.shape[1] // ds, f.shape[2] // ds
    if ds < 1 or h < 1 or w < 1:
        raise ConfigError(
            f"alignment.ds_factor={ds_factor} is invalid for {f.shape[2]}x{f.shape[1]} "
            "frames: it must be >= 1 and leave at least one pixel"
        )
    out = np.empty((len(f), h, w), np.float32)
    for i, im in enumerate(f):
        out[i] = cv2.resize(im.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def spectral_variance_scores(
    frames_ds: np.ndarray,
    fs: float,
    q_low_f: float = 3.5,
    q_high_f: float = 20.0,
    f_min: float = 0.5,
    f_max: float = 60.0,
    n_freq_bins: int = 50,
    window_type: str = "hann",
    downsample_factor: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean VQT magnitude of all pixel traces per time bin (how much is moving).

    Each downsampled pixel is one channel of a VQT over time (``facerhythm_core.vqt``,
    'valid' padding); the magnitude is averaged over pixels and frequencies.

    ``f_max`` is clamped to 0.9 x Nyquist, and when the clip is shorter than four VQT
    windows ``f_min`` is raised until four fit (both logged): with the reference's
    F_min = 0.5 Hz one window is 7 s of video at 120 fps, and a clip of a single
    window leaves a single time bin to choose from.

    Parameters
    ----------
    frames_ds : ndarray, shape (n, h, w)
        Downsampled frames (see :func:`downsample_frames`).
    fs : float
        Frame rate in Hz.
    q_low_f, q_high_f, f_min, f_max, n_freq_bins, window_type, downsample_factor
        VQT parameters (reference ``params_vqt``).

    Returns
    -------
    scores : ndarray, float64, shape (T',)
    x_axis : ndarray, float64, shape (T',)
        Frame index of each bin's centre.
    """
    from . import vqt as _vqt

    x = np.asarray(frames_ds, np.float32)
    n = len(x)
    x = x.reshape(n, -1).T  # (pixels, frames)
    x = x - x.mean(axis=1, keepdims=True)
    nyq = fs / 2.0
    if f_max > 0.9 * nyq:
        logger.info("reference image: VQT f_max %.3g Hz clamped to 0.9 x Nyquist = %.3g Hz", f_max, 0.9 * nyq)
        f_max = 0.9 * nyq
    win = _vqt.default_win_size(q_low_f, fs, f_min)
    if win > n // 4:
        # keep the window to a quarter of the clip, so that there are bins to choose from
        if n < 64:
            raise ROIError(f"reference image: only {n} frames; need at least 64 to score motion")
        f_min_new = q_low_f * fs / (n // 4 - 2)
        logger.warning(
            "reference image: %d frames are fewer than 4 VQT windows (%d) at f_min=%.3g Hz; using f_min=%.3g Hz",
            n,
            win,
            f_min,
            f_min_new,
        )
        f_min = f_min_new
        win = _vqt.default_win_size(q_low_f, fs, f_min)
    if not f_min < f_max:
        raise ROIError(
            f"reference image: the clip ({n} frames at {fs:g} Hz) is too short for the VQT "
            f"band (f_min {f_min:.3g} Hz >= f_max {f_max:.3g} Hz); use more frames "
            "(alignment.max_frames) or a longer video"
        )
    bank = _vqt.make_vqt_filters(
        fs,
        q_low_f=q_low_f,
        q_high_f=q_high_f,
        f_min=f_min,
        f_max=f_max,
        n_freq_bins=n_freq_bins,
        window_type=window_type,
    )
    spec = _vqt.vqt(x, bank, downsample_factor=downsample_factor, padding="valid", take_abs=True)
    spec = np.asarray(spec.cpu().numpy() if hasattr(spec, "cpu") else spec)
    scores = spec.mean(axis=(0, 1)).astype(np.float64)
    x_axis = _vqt.time_axis(n, bank.filters.shape[1], downsample_factor, "valid")
    return scores, x_axis


def quiet_frame_indices(scores: np.ndarray, x_axis: np.ndarray, ptile_keep: float, n_frames: int) -> np.ndarray:
    """Frames at the centres of the time bins scoring at or below the ``ptile_keep`` percentile.

    Returns
    -------
    ndarray, int64, sorted unique frame indices in [0, n_frames)
    """
    scores = np.asarray(scores, np.float64)
    if scores.size == 0:
        raise ROIError("reference image: no spectral time bins (clip too short)")
    if not 0 < ptile_keep <= 100:
        raise ConfigError(f"alignment.ptile_keep must be in (0, 100], got {ptile_keep}")
    keep = scores <= np.percentile(scores, ptile_keep)
    idx = np.clip(np.round(np.asarray(x_axis)[keep]).astype(np.int64), 0, n_frames - 1)
    return np.unique(idx)


def clahe(image: np.ndarray, clip_limit: float = 2.0, grid_size: int = 20) -> np.ndarray:
    """CLAHE on a non-negative image, returned as float32 scaled to max 1.

    The image is scaled to the uint16 range first (as ROICaT's ``clahe``);
    ``grid_size`` is the number of tiles per side (OpenCV ``tileGridSize``).
    """
    import cv2

    im = np.asarray(image, np.float64)
    mx = im.max()
    if not np.isfinite(mx) or mx <= 0:
        raise ROIError("reference image is empty (all zero or not finite)")
    u16 = np.round(np.clip(im, 0, None) / mx * 65535).astype(np.uint16)
    out = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(grid_size), int(grid_size))).apply(u16)
    out = out.astype(np.float32)
    return out / max(float(out.max()), 1e-12)


def finish_reference_image(mean_frame: np.ndarray, clip_limit: float = 2.0, grid_size: int = 20) -> np.ndarray:
    """Square root, scale to max 1, CLAHE: float32 (H, W) in [0, 1]."""
    im = np.sqrt(np.clip(np.asarray(mean_frame, np.float64), 0, None))
    im = im / max(im.max(), 1e-12)
    return clahe(im, clip_limit, grid_size)


def reference_image_from_frames(
    frames: np.ndarray,
    fs: float,
    ds_factor: int = 20,
    ptile_keep: float = 10.0,
    clip_limit: float = 2.0,
    grid_size: int = 20,
    vqt_params: Mapping | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """In-memory reference image of one clip (see :func:`reference_image_from_videos`).

    Returns
    -------
    image : ndarray, float32, shape (H, W), in [0, 1]
    kept : ndarray, int64
        Frame indices that were averaged.
    """
    frames = np.asarray(frames)
    gray = frames.mean(axis=-1) if frames.ndim == 4 else frames
    scores, x_axis = spectral_variance_scores(
        downsample_frames(gray, ds_factor), fs, **{**DEFAULT_VQT, **(vqt_params or {})}
    )
    kept = quiet_frame_indices(scores, x_axis, ptile_keep, len(gray))
    mean = gray[kept].astype(np.float64).mean(axis=0)
    return finish_reference_image(mean, clip_limit, grid_size), kept


def reference_image_from_videos(
    paths: Sequence[str | Path],
    fs: float,
    ds_factor: int = 20,
    ptile_keep: float = 10.0,
    max_frames: int | None = 3600,
    clip_limit: float = 2.0,
    grid_size: int = 20,
    vqt_params: Mapping | None = None,
    chunk_size: int = 128,
) -> tuple[np.ndarray, dict]:
    """Reference image of a session, streamed from its videos (two passes, bounded memory).

    Pass 1 decodes up to ``max_frames`` frames (videos in order) and keeps only the
    downsampled frames; each video is scored separately so that no VQT window spans a
    file boundary. The quietest ``ptile_keep`` percent of bins (over the session) pick
    the frames that pass 2 decodes again at full resolution and averages.

    Parameters
    ----------
    paths : sequence of paths
        The session's videos.
    fs : float
        Frame rate in Hz.
    ds_factor, ptile_keep, clip_limit, grid_size, vqt_params
        See :func:`reference_image_from_frames`; reference defaults.
    max_frames : int or None
        Frames read in total (None = all).
    chunk_size : int
        Decoding chunk.

    Returns
    -------
    image : ndarray, float32, shape (H, W), in [0, 1]
    info : dict
        ``frames_scored`` and ``frames_kept`` per video.
    """
    from .video import iter_frame_chunks, probe_video, read_frames

    vp = {**DEFAULT_VQT, **(vqt_params or {})}
    budget = None if max_frames is None else int(max_frames)
    per_video = []
    for p in paths:
        if budget is not None and budget <= 0:
            break
        n = probe_video(p).num_frames
        stop = n if budget is None else min(n, budget)
        ds = [downsample_frames(ch, ds_factor) for _, ch in iter_frame_chunks(p, chunk_size, gray=True, stop=stop)]
        ds = np.concatenate(ds) if ds else np.zeros((0, 1, 1), np.float32)
        if budget is not None:
            budget -= len(ds)
        if len(ds) < 64:
            logger.warning("reference image: skipping %s (%d frames read)", p, len(ds))
            continue
        scores, x_axis = spectral_variance_scores(ds, fs, **vp)
        per_video.append((str(p), len(ds), scores, x_axis))
    if not per_video:
        raise ROIError(f"reference image: no video of {list(map(str, paths))} has enough frames")
    thr = np.percentile(np.concatenate([s for _, _, s, _ in per_video]), ptile_keep)
    total = None
    count = 0
    info = {"frames_scored": {}, "frames_kept": {}}
    for p, n, scores, x_axis in per_video:
        info["frames_scored"][p] = n
        keep = scores <= thr
        if not keep.any():
            info["frames_kept"][p] = []
            continue
        idx = np.unique(np.clip(np.round(x_axis[keep]).astype(np.int64), 0, n - 1))
        frames = read_frames(p, idx.tolist(), gray=True, chunk_size=chunk_size).astype(np.float64)
        total = frames.sum(axis=0) if total is None else total + frames.sum(axis=0)
        count += len(frames)
        info["frames_kept"][p] = idx.tolist()
    logger.info("reference image: averaged %d quiet frames of %d scored", count, sum(info["frames_scored"].values()))
    return finish_reference_image(total / count, clip_limit, grid_size), info


# =========================================================================== registration


@dataclass
class Registration:
    """A warp from template coordinates to moving (session) coordinates.

    Attributes
    ----------
    matrix : ndarray, float64, shape (3, 3)
        Homogeneous map of (x, y, 1) template points to the moving image.
    flow : ndarray, float32, shape (H, W, 2), or None
        Non-rigid residual on the moving grid: a point first mapped by ``matrix`` to
        ``q`` ends at ``q + flow(q)``.
    method, constraint : str
    info : dict
        Method details (ECC correlation, filter size used, ...).
    """

    matrix: np.ndarray
    flow: np.ndarray | None = None
    method: str = "identity"
    constraint: str = "translation"
    info: dict = field(default_factory=dict)

    def then(self, other: "Registration") -> "Registration":
        """Compose geometric parts: first ``self`` (A -> B), then ``other`` (B -> C)."""
        if self.flow is not None or other.flow is not None:
            raise ValueError("only geometric (flow-free) registrations can be composed")
        return Registration(
            other.matrix @ self.matrix,
            None,
            other.method,
            _wider(self.constraint, other.constraint),
            {"composed": True},
        )

    def inverse(self) -> "Registration":
        if self.flow is not None:
            raise ValueError("only geometric (flow-free) registrations can be inverted")
        return Registration(np.linalg.inv(self.matrix), None, self.method, self.constraint, dict(self.info))


def _wider(a: str, b: str) -> str:
    return CONSTRAINTS[max(CONSTRAINTS.index(a), CONSTRAINTS.index(b))]


def _check_pair(im_template: np.ndarray, im_moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    a, b = _check_pair(im_template, im_moving)
    mask = None if bandpass is None else bandpass_filter_2d(a.shape, bandpass[0], bandpass[1], order)
    taper = _taper(a.shape, window)
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
    a, b = _check_pair(im_template, im_moving)
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
    a, b = _check_pair(im_template_warped, im_moving)

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
    a, b = _check_pair(im_template, im_moving)
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


# =========================================================================== warping


def _apply_matrix(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    ph = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ m.T
    return ph[:, :2] / ph[:, 2:3]


def _sample(field_: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W, C) field at (x, y) points (edge-replicated)."""
    import cv2

    mx = np.ascontiguousarray(pts[:, 0].astype(np.float32)[None])
    my = np.ascontiguousarray(pts[:, 1].astype(np.float32)[None])
    out = cv2.remap(np.ascontiguousarray(field_, np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(len(pts), -1).astype(np.float64)


def warp_points(points: np.ndarray, reg: Registration) -> np.ndarray:
    """Map (x, y) template points into the moving image.

    Returns
    -------
    ndarray, float64, shape (N, 2)
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if len(p) == 0:
        return p.copy()
    q = _apply_matrix(reg.matrix, p)
    if reg.flow is not None:
        q = q + _sample(reg.flow, q)
    return q


def inverse_map(reg: Registration, shape: tuple[int, int], n_iter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Template (x, y) coordinates of every moving-image pixel (for ``cv2.remap``).

    The non-rigid part is inverted by fixed-point iteration ``y <- q - flow(y)``.

    Returns
    -------
    map_x, map_y : ndarray, float32, shape (H, W)
    """
    import cv2

    h, w = shape
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float32)
    yx, yy = qx, qy
    if reg.flow is not None:
        if reg.flow.shape[:2] != (h, w):
            raise ROIError(f"flow field {reg.flow.shape[:2]} does not match the output shape {(h, w)}")
        fx = np.ascontiguousarray(reg.flow[..., 0])
        fy = np.ascontiguousarray(reg.flow[..., 1])
        for _ in range(int(n_iter)):
            ux = cv2.remap(fx, yx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            uy = cv2.remap(fy, yx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            yx, yy = qx - ux, qy - uy
    minv = np.linalg.inv(reg.matrix)
    px = minv[0, 0] * yx + minv[0, 1] * yy + minv[0, 2]
    py = minv[1, 0] * yx + minv[1, 1] * yy + minv[1, 2]
    pz = minv[2, 0] * yx + minv[2, 1] * yy + minv[2, 2]
    return (px / pz).astype(np.float32), (py / pz).astype(np.float32)


def warp_image(
    image: np.ndarray,
    reg: Registration,
    shape: tuple[int, int] | None = None,
    border_value: float | None = None,
    interpolation: str = "linear",
) -> np.ndarray:
    """Resample a template-frame image into the moving frame.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    reg : Registration
    shape : (H, W), optional
        Output shape (default: the input's).
    border_value : float, optional
        Fill outside the template (default: the image mean, as the reference).
    interpolation : {'linear', 'nearest', 'cubic'}
    """
    import cv2

    im = np.asarray(image)
    shape = tuple(shape or im.shape[:2])
    mx, my = inverse_map(reg, shape)
    flag = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}[interpolation]
    bv = float(im.mean()) if border_value is None else float(border_value)
    src = im.astype(np.float32) if im.dtype == np.float64 else im
    out = cv2.remap(src, mx, my, flag, borderMode=cv2.BORDER_CONSTANT, borderValue=bv)
    return out.astype(im.dtype, copy=False)


def warp_mask(mask: np.ndarray, reg: Registration, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Warp a bool mask into the moving frame (linear interpolation, threshold 0.5)."""
    m = warp_image(np.asarray(mask, np.float32), reg, shape, border_value=0.0)
    return m >= 0.5


def warp_rois(rois, reg: Registration, shape: tuple[int, int]):
    """Carry an ROI set from the template into the moving frame.

    Masks are resampled (:func:`warp_mask`), polygon vertices and seed points are
    mapped forward (:func:`warp_points`), so points, polygons and masks stay
    consistent with :func:`warp_image`. Point order and count are kept (sessions keep
    a one-to-one point correspondence); the example image is left unset.

    Parameters
    ----------
    rois : facerhythm_core.rois.ROISet
    reg : Registration
    shape : (H, W)
        Frame size of the moving session.

    Returns
    -------
    ROISet
    """
    from .rois import ROISet

    masks = {}
    for k, m in rois.masks.items():
        wm = warp_mask(m, reg, shape)
        if not wm.any():
            raise ROIError(f"ROI {k!r} falls entirely outside the session's frame after warping")
        masks[k] = wm
    polys = {k: warp_points(p, reg).astype(np.float32) for k, p in rois.polygons.items()}
    pts = None if rois.point_positions is None else warp_points(rois.point_positions, reg).astype(np.float32)
    return ROISet(masks=masks, polygons=polys, point_positions=pts, example_image=None)


# =========================================================================== quality


def _taper(shape: tuple[int, int], window: str | None):
    import scipy.signal

    if window is None:
        return 1.0
    return np.outer(
        scipy.signal.get_window(window, shape[0], fftbins=False),
        scipy.signal.get_window(window, shape[1], fftbins=False),
    )


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
    a, b = _check_pair(im_ref, im_aligned)
    shape = a.shape
    filt_in = bandpass_filter_2d(shape, 0.0, float(radius_in), order)
    filt_out = bandpass_filter_2d(shape, float(radius_out), min(shape) / 2, order)
    taper = _taper(shape, window)
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
