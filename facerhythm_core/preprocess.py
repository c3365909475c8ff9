"""The tracker's per-frame preprocessing: gray, tracking mask and CLAHE, on the region
of the frame that LK reads (reference ``PointTracker`` preprocessing)."""

from __future__ import annotations

import math

import numpy as np

from .clahe import Clahe
from .errors import ROIError, VideoError
from .video import to_gray


def _clahe_tiles(height: int, width: int, gx: int, gy: int) -> tuple[int, int]:
    """Tile size (tw, th) in pixels that OpenCV's CLAHE uses on an (height, width) image.

    When either side is not divisible by its tile count, OpenCV pads the bottom by
    ``gy - height % gy`` rows and the right by ``gx - width % gx`` columns (reflect-101),
    a whole extra tile's worth on a side that was divisible, and splits the padded image
    evenly.
    """
    if width % gx == 0 and height % gy == 0:
        return width // gx, height // gy
    return (width + gx - width % gx) // gx, (height + gy - height % gy) // gy


def preprocess_frame(
    frame: np.ndarray,
    mask: np.ndarray | None,
    clahe_clip_limit: float | None = 40.0,
    clahe_tile_grid_size: tuple[int, int] = (150, 150),
) -> np.ndarray:
    """The reference's per-frame preprocessing on a full frame (the slow, exact path).

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W) gray or (H, W, C) colour
        Colour is reduced by the equal-weight channel mean, truncated.
    mask : ndarray, bool, shape (H, W), or None
        Pixels outside are set to 0 before CLAHE (as the reference).
    clahe_clip_limit, clahe_tile_grid_size
        CLAHE settings; ``clahe_clip_limit=None`` skips CLAHE.

    Returns
    -------
    ndarray, uint8, shape (H, W)
    """
    import cv2

    f = np.asarray(frame)
    if f.ndim == 3:
        f = to_gray(f)
    if f.dtype != np.uint8:
        raise VideoError(f"frames must be uint8, got {f.dtype}")
    if mask is not None:
        f = f * np.asarray(mask, dtype=np.uint8)
    if clahe_clip_limit is None:
        return np.ascontiguousarray(f)
    clahe = cv2.createCLAHE(clipLimit=float(clahe_clip_limit), tileGridSize=tuple(clahe_tile_grid_size))
    return clahe.apply(np.ascontiguousarray(f))


class FramePreprocessor:
    """Mask + CLAHE for a stream of gray frames, optionally on a crop of each frame.

    With ``crop=True`` only the tracking mask's bounding box plus a margin is processed.
    The crop is chosen so that the result equals the full-frame preprocessing inside it:

    - its origin is a multiple of the full frame's CLAHE tile size (so the CLAHE tiles
      are the same pixels and the same tile *size* in pixels as on the full frame) and
      of ``2**max_level`` (so the LK pyramid samples the same pixels);
    - CLAHE runs on whole tiles, the bottom/right padding reproduced as OpenCV pads the
      full frame;
    - the margin holds two tiles beyond the mask (CLAHE output there is the constant that
      fully masked tiles map to) plus the LK window at the coarsest level, so LK windows
      that cross the crop's edge read the same constant the full frame holds there.

    The only differences left are float rounding in OpenCV's tile-interpolation weights
    (rarely +-1 grey level) and in the LK coordinates; ``docs/tracking.md`` gives the
    measured effect.

    Parameters
    ----------
    mask : ndarray, bool, shape (H, W)
        Tracking mask.
    clahe_clip_limit : float or None
    clahe_tile_grid_size : (int, int)
        Tile count (x, y) *of the full frame*.
    crop : bool
    win_size : (int, int)
    max_level : int
        LK settings, used for the margin and the alignment.
    clahe_engine : {"auto", "numba", "opencv"}
        See :class:`facerhythm_core.clahe.Clahe` (same output either way).

    Attributes
    ----------
    offset : (int, int)
        (x0, y0) of the processed region in frame pixels; add it to positions found in
        a processed image to get frame coordinates.
    shape : (int, int)
        (h, w) of the processed images.
    """

    def __init__(
        self,
        mask: np.ndarray,
        clahe_clip_limit: float | None = 40.0,
        clahe_tile_grid_size: tuple[int, int] = (150, 150),
        crop: bool = True,
        win_size: tuple[int, int] = (20, 20),
        max_level: int = 2,
        clahe_engine: str = "auto",
    ):
        import cv2

        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ROIError(f"tracking mask must be 2-D (H, W), got shape {mask.shape}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ROIError("tracking mask is empty (no pixel selected); check the ROIs")
        self.frame_shape = (int(mask.shape[0]), int(mask.shape[1]))
        H, W = self.frame_shape
        self.use_clahe = clahe_clip_limit is not None
        gx, gy = (int(v) for v in clahe_tile_grid_size)
        if self.use_clahe:
            tw, th = _clahe_tiles(H, W, gx, gy)
            Wp, Hp = tw * gx, th * gy  # the padded size OpenCV works on
            # OpenCV builds a LUT for every tile of the padded image, but the frame's pixels
            # interpolate only between tiles up to floor((W-1)/tw + 1/2); the tiles beyond
            # (up to a whole grid's worth when W % gx is large) are never read
            Wu = min(Wp, (math.floor((W - 1) / tw + 0.5) + 1) * tw)
            Hu = min(Hp, (math.floor((H - 1) / th + 0.5) + 1) * th)
        else:
            tw = th = 1
            Wp, Hp = Wu, Hu = W, H
        step = 2 ** int(max_level)
        ax, ay = math.lcm(tw, step), math.lcm(th, step)
        x0 = y0 = 0
        x1p, y1p = Wu, Hu
        rx0, ry0, rx1p, ry1p = 0, 0, Wu, Hu  # the region CLAHE is computed on
        if crop:
            ys, xs = np.nonzero(mask)
            lk_margin = (max(win_size) // 2 + 3) * step
            mx = lk_margin + 2 * tw + 2
            my = lk_margin + 2 * th + 2
            x0 = max(0, (int(xs.min()) - mx) // ax * ax)
            y0 = max(0, (int(ys.min()) - my) // ay * ay)
            x1p = min(Wu, -(-(int(xs.max()) + 1 + mx) // tw) * tw)
            y1p = min(Hu, -(-(int(ys.max()) + 1 + my) // th) * th)
            # CLAHE itself only where a tile within one tile holds mask pixels; farther out
            # every fully masked tile maps 0 to the same constant
            rx0 = max(0, (int(xs.min()) - 2 * tw) // tw * tw)
            ry0 = max(0, (int(ys.min()) - 2 * th) // th * th)
            rx1p = min(Wu, -(-(int(xs.max()) + 1 + 2 * tw) // tw) * tw)
            ry1p = min(Hu, -(-(int(ys.max()) + 1 + 2 * th) // th) * th)
            # OpenCV's bottom/right padding reflects the last rows/columns: if they hold mask
            # pixels, the padded tiles do too
            if int(xs.max()) >= W - 1 - (Wu - W) - 2 * tw:
                x1p = rx1p = Wu
            if int(ys.max()) >= H - 1 - (Hu - H) - 2 * th:
                y1p = ry1p = Hu
            region_thin = min(rx1p, W) - rx0 <= rx1p - min(rx1p, W) or min(ry1p, H) - ry0 <= ry1p - min(ry1p, H)
            too_thin = region_thin or (min(x1p, W) - x0 <= x1p - min(x1p, W) or min(y1p, H) - y0 <= y1p - min(y1p, H))
            if too_thin or (x1p - x0) * (y1p - y0) > 0.9 * Wu * Hu:  # not worth it / cannot pad
                x0, y0, x1p, y1p = 0, 0, Wu, Hu
            # CLAHE's cost grows with its tile count, so it is restricted to the region even
            # when the LK crop (which needs a wide margin) is not worth it
            if region_thin or (rx1p - rx0) * (ry1p - ry0) > 0.9 * Wu * Hu:
                rx0, ry0, rx1p, ry1p = x0, y0, x1p, y1p
        self.cropped = (x0, y0, x1p, y1p) != (0, 0, Wu, Hu)
        self.offset = (x0, y0)
        x1, y1 = min(x1p, W), min(y1p, H)
        self._src = (slice(y0, y1), slice(x0, x1))
        self.shape = (y1 - y0, x1 - x0)
        self._mask = np.ascontiguousarray(mask[self._src], dtype=np.uint8)
        self._clahe = None
        self._fill = 0
        if self.use_clahe:
            rx1, ry1 = min(rx1p, W), min(ry1p, H)
            self._rsrc = (slice(ry0, ry1), slice(rx0, rx1))  # in frame pixels
            self._rdst = (slice(ry0 - y0, ry1 - y0), slice(rx0 - x0, rx1 - x0))  # in the crop
            self._rmask = np.ascontiguousarray(mask[self._rsrc], dtype=np.uint8)
            self._pad = (ry1p - ry1, rx1p - rx1)  # bottom/right padding OpenCV would add
            self._partial = (rx0, ry0, rx1, ry1) != (x0, y0, x1, y1)
            # our own tile grid (aligned with the full frame's) unless OpenCV sees the whole frame
            self._manual = self.cropped or self._partial or (Wu, Hu) != (Wp, Hp)
            if self._manual:
                # whole tiles of the full frame's tile size
                grid = ((rx1p - rx0) // tw, (ry1p - ry0) // th)
                # what a fully masked tile maps to (same tile size, so same clip limit)
                self._fill = int(
                    cv2.createCLAHE(clipLimit=float(clahe_clip_limit), tileGridSize=(1, 1)).apply(
                        np.zeros((th, tw), np.uint8)
                    )[0, 0]
                )
            else:
                grid = (gx, gy)
            # equal to cv2.createCLAHE(...).apply, about 2.5x faster on the tracker's tiny tiles
            self._clahe = Clahe(float(clahe_clip_limit), grid, engine=clahe_engine)
            self._pad_needed = self._manual and (self._pad[0] > 0 or self._pad[1] > 0)
        self.clahe_region = None if self._clahe is None else (rx0, ry0, min(rx1p, W), min(ry1p, H))

    def __repr__(self):
        engine = "" if self._clahe is None else f", clahe_engine={self._clahe.engine}"
        return (
            f"FramePreprocessor(frame={self.frame_shape}, offset={self.offset}, "
            f"shape={self.shape}, clahe_region={self.clahe_region}{engine})"
        )

    def process_chunk(self, frames: np.ndarray) -> np.ndarray:
        """Preprocess frames -> (n, h, w) uint8.

        ``frames`` is (n, H, W) gray or (n, H, W, C) colour uint8; colour is cropped
        first and then reduced to gray as the reference does (equal-weight mean,
        truncated), which is the same per pixel and much cheaper than graying full frames.
        """
        import cv2

        frames = np.asarray(frames)
        if frames.ndim not in (3, 4) or frames.shape[1:3] != self.frame_shape:
            raise VideoError(
                f"frames have shape {frames.shape[1:]} but the tracking mask is "
                f"{self.frame_shape}; ROIs and video must have the same size"
            )
        if frames.dtype != np.uint8:
            raise VideoError(f"frames must be uint8, got {frames.dtype}")
        if self._clahe is None:
            crop = frames[:, self._src[0], self._src[1]]
            if crop.ndim == 4:
                crop = to_gray(crop)
            return np.multiply(crop, self._mask)
        src = frames[:, self._rsrc[0], self._rsrc[1]]
        if src.ndim == 4:
            masked = to_gray(src)
            np.multiply(masked, self._rmask, out=masked)
        else:
            masked = np.multiply(src, self._rmask)
        if self._partial:
            out = np.full((len(frames),) + self.shape, self._fill, dtype=np.uint8)
        else:
            out = np.empty((len(frames),) + self.shape, dtype=np.uint8)
        pb, pr = self._pad
        h, w = masked.shape[1:]
        for i in range(len(masked)):
            if self._pad_needed:
                ext = cv2.copyMakeBorder(masked[i], 0, pb, 0, pr, cv2.BORDER_REFLECT_101)
                out[i][self._rdst] = self._clahe.apply(ext)[:h, :w]
            elif self._partial:
                out[i][self._rdst] = self._clahe.apply(masked[i])
            else:
                self._clahe.apply(masked[i], dst=out[i])
        return out

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Preprocess one gray frame (H, W) uint8 -> (h, w) uint8."""
        return self.process_chunk(np.asarray(frame)[None])[0]
