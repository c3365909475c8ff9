"""Reference image of a session: the average of its quietest frames, for ROI transfer.

Re-implements face-rhythm 0.3.3's ``Image_preparation_pipeline`` (``docs/alignment.md``):
downsample the frames, score each time bin by the mean VQT magnitude of the pixel
traces, keep the quietest ``ptile_keep`` percent (frames without behaviour), average
them at full resolution, square-root, scale to max 1, CLAHE.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError, ROIError

logger = logging.getLogger(__name__)

#: reference ``Image_preparation_pipeline`` VQT parameters (Fs is the session's rate here)
DEFAULT_VQT = dict(
    q_low_f=3.5, q_high_f=20.0, f_min=0.5, f_max=60.0, n_freq_bins=50, window_type="hann", downsample_factor=10
)


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
    from . import vqt_filters

    x = np.asarray(frames_ds, np.float32)
    n = len(x)
    x = x.reshape(n, -1).T  # (pixels, frames)
    x = x - x.mean(axis=1, keepdims=True)
    nyq = fs / 2.0
    if f_max > 0.9 * nyq:
        logger.info("reference image: VQT f_max %.3g Hz clamped to 0.9 x Nyquist = %.3g Hz", f_max, 0.9 * nyq)
        f_max = 0.9 * nyq
    win = vqt_filters.default_win_size(q_low_f, fs, f_min)
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
        win = vqt_filters.default_win_size(q_low_f, fs, f_min)
    if not f_min < f_max:
        raise ROIError(
            f"reference image: the clip ({n} frames at {fs:g} Hz) is too short for the VQT "
            f"band (f_min {f_min:.3g} Hz >= f_max {f_max:.3g} Hz); use more frames "
            "(alignment.max_frames) or a longer video"
        )
    bank = vqt_filters.make_vqt_filters(
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
