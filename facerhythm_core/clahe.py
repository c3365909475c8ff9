"""CLAHE equal to OpenCV's ``createCLAHE(...).apply`` on uint8 images, built for tiny tiles.

The reference tracker equalises every frame with a 150 x 150 tile grid, so on a
640 x 480 frame each tile holds 5 x 4 = 20 pixels. OpenCV still builds a full 256-entry
histogram and lookup table (clip, redistribute, prefix sum) for every tile, and that
is most of its cost: about 4 ms of the tracker's ~9 ms CPU per frame.

This implementation computes the same numbers with less work. A tile's lookup table is
read only at the grey values of pixels at most one tile away (bilinear interpolation
mixes the four nearest tile centres), so each table is built only over the value range
of its 3 x 3 tile neighbourhood, typically 10-40 values instead of 256. Everything
else follows OpenCV's arithmetic step by step (integer clip limit, redistribution
batch and residual step, ``saturate_cast(sum * lutScale)``, float32 interpolation
weights and rounding), so the output is identical; ``tests/test_clahe.py`` checks this
against OpenCV over random sizes, grids, clip limits and contents.

The kernels are compiled with numba (cached on disk after the first run). Without
numba, :class:`Clahe` falls back to OpenCV.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

try:  # numba is a dependency; the fallback keeps the tracker usable where it cannot load
    import numba as _numba
except Exception:  # pragma: no cover - ImportError, or llvmlite failing to load
    _numba = None

__all__ = ["Clahe", "HAVE_NUMBA"]

HAVE_NUMBA = _numba is not None


def _jit(fn=None, *, inline: str = "never"):
    """numba ``njit`` (cached, nogil); ``inline="always"`` for helpers of a kernel's loops."""
    if fn is None:
        return lambda f: _jit(f, inline=inline)
    if _numba is None:  # pragma: no cover
        return fn
    try:
        return _numba.njit(cache=True, nogil=True, inline=inline)(fn)
    except RuntimeError as exc:  # pragma: no cover - no writable cache location at all
        # compile in memory each run (a few seconds) rather than fail the job
        logger.info("numba cannot cache the CLAHE kernels (%s); compiling per process", exc)
        return _numba.njit(cache=False, nogil=True, inline=inline)(fn)


@_jit
def _tile_value_ranges(ext, tiles_x, tiles_y, tw, th, mn, mx):  # pragma: no cover - compiled
    """Smallest and largest grey value of each tile into ``mn``, ``mx`` (tiles_y * tiles_x,)."""
    for k in range(tiles_x * tiles_y):
        ty = k // tiles_x
        tx = k - ty * tiles_x
        lo = 255
        hi = 0
        for y in range(ty * th, ty * th + th):
            for x in range(tx * tw, tx * tw + tw):
                v = np.int32(ext[y, x])
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
        mn[k] = lo
        mx[k] = hi


@_jit(inline="always")  # per tile; as a numba call (three helpers) apply was ~20% slower
def _neighbourhood_range(mn, mx, tiles_x, tiles_y, tx, ty):  # pragma: no cover - compiled
    """(lo, hi): the value range of the 3 x 3 tiles around tile (tx, ty), clipped to the grid."""
    lo = 255
    hi = 0
    for yy in range(max(ty - 1, 0), min(ty + 2, tiles_y)):
        for xx in range(max(tx - 1, 0), min(tx + 2, tiles_x)):
            j = yy * tiles_x + xx
            if mn[j] < lo:
                lo = mn[j]
            if mx[j] > hi:
                hi = mx[j]
    return lo, hi


@_jit
def _tile_luts(ext, tiles_x, tiles_y, tw, th, clip, table, luts):  # pragma: no cover - compiled
    """Per-tile lookup tables, each valid on the value range its interpolation reads.

    ext : (tiles_y * th, tiles_x * tw) uint8, the (padded) image the tiles cut.
    luts : (tiles_y * tiles_x, 256) uint8, written only at [lo_k, hi_k] for tile k.
    """
    n_tiles = tiles_x * tiles_y
    mn = np.empty(n_tiles, np.int32)
    mx = np.empty(n_tiles, np.int32)
    _tile_value_ranges(ext, tiles_x, tiles_y, tw, th, mn, mx)
    hist = np.zeros(256, np.int32)
    for k in range(n_tiles):
        ty = k // tiles_x
        tx = k - ty * tiles_x
        # the pixels that read this tile's table lie in the 3 x 3 tiles around it
        lo, hi = _neighbourhood_range(mn, mx, tiles_x, tiles_y, tx, ty)
        y0 = ty * th
        x0 = tx * tw
        clipped = 0
        if clip > 0:  # count, clipping as it goes: min(count, clip) kept, the rest clipped
            for y in range(y0, y0 + th):
                for x in range(x0, x0 + tw):
                    v = ext[y, x]
                    if hist[v] < clip:
                        hist[v] += 1
                    else:
                        clipped += 1
        else:
            for y in range(y0, y0 + th):
                for x in range(x0, x0 + tw):
                    hist[ext[y, x]] += 1
        batch = clipped // 256
        residual = clipped - batch * 256
        # the prefix sum up to lo - 1: no pixel of this tile is below lo, so only the
        # redistribution (batch per bin, +1 at bins 0, step, 2 step, ... residual times)
        s = batch * lo
        if residual > 0:
            step = max(256 // residual, 1)
            m = min(residual, (lo + step - 1) // step)  # residual bins below lo
            s += m
            while m < residual and m * step <= hi:
                hist[m * step] += 1
                m += 1
        row = luts[k]
        for i in range(lo, hi + 1):
            s += hist[i] + batch
            row[i] = table[s]
            hist[i] = 0


@_jit
def _interpolate(src, dst, luts, tiles_x, tiles_y, ind1, ind2, xa, xa1, inv_th):  # pragma: no cover
    """OpenCV's CLAHE_Interpolation_Body, float32 operation for operation."""
    h, w = src.shape
    half = np.float32(0.5)
    one = np.float32(1.0)
    for y in range(h):
        tyf = np.float32(y) * inv_th - half
        ty1 = int(np.floor(tyf))
        ya = tyf - np.float32(ty1)
        ya1 = one - ya
        ty2 = min(ty1 + 1, tiles_y - 1)
        ty1 = max(ty1, 0)
        p1 = ty1 * tiles_x
        p2 = ty2 * tiles_x
        for x in range(w):
            v = src[y, x]
            i1 = ind1[x]
            i2 = ind2[x]
            res = (np.float32(luts[p1 + i1, v]) * xa1[x] + np.float32(luts[p1 + i2, v]) * xa[x]) * ya1 + (
                np.float32(luts[p2 + i1, v]) * xa1[x] + np.float32(luts[p2 + i2, v]) * xa[x]
            ) * ya
            r = np.rint(res)
            if r < 0:
                r = 0
            elif r > 255:
                r = 255
            dst[y, x] = np.uint8(r)


class Clahe:
    """Contrast-limited adaptive histogram equalisation of uint8 images, as OpenCV.

    ``Clahe(clip_limit, (gx, gy)).apply(img)`` equals
    ``cv2.createCLAHE(clip_limit, (gx, gy)).apply(img)`` pixel for pixel.

    Parameters
    ----------
    clip_limit : float
        OpenCV's clipLimit (<= 0: no clipping).
    tile_grid_size : (int, int)
        Tile count (x, y).
    engine : {"auto", "numba", "opencv"}
        "auto" uses the numba kernels when numba loads, else OpenCV.

    Notes
    -----
    An instance keeps scratch buffers per image size: use one instance per thread.
    """

    def __init__(self, clip_limit: float = 40.0, tile_grid_size: tuple[int, int] = (8, 8), engine: str = "auto"):
        gx, gy = (int(v) for v in tile_grid_size)
        if gx < 1 or gy < 1:
            raise ValueError(f"tile_grid_size must be positive, got {tile_grid_size}")
        if engine not in ("auto", "numba", "opencv"):
            raise ValueError(f"engine must be 'auto', 'numba' or 'opencv', got {engine!r}")
        if engine == "numba" and not HAVE_NUMBA:
            raise ImportError("Clahe(engine='numba') needs numba (pip install numba)")
        self.clip_limit = float(clip_limit)
        self.grid = (gx, gy)
        self.engine = "numba" if engine in ("auto", "numba") and HAVE_NUMBA else "opencv"
        self._cv = None
        self._geom: dict = {}

    def __repr__(self):
        return f"Clahe(clip_limit={self.clip_limit}, tile_grid_size={self.grid}, engine={self.engine!r})"

    def _geometry(self, h: int, w: int):
        g = self._geom.get((h, w))
        if g is not None:
            return g
        gx, gy = self.grid
        pad = (0, 0) if (w % gx == 0 and h % gy == 0) else (gy - h % gy, gx - w % gx)
        tw, th = (w + pad[1]) // gx, (h + pad[0]) // gy
        total = tw * th
        scale = np.float32(np.float32(255) / np.float32(total))  # static_cast<float>(255) / total
        clip = max(int(self.clip_limit * total / 256), 1) if self.clip_limit > 0 else 0
        # saturate_cast<uchar>(sum * lutScale) for every reachable sum (0..total)
        table = np.clip(np.rint(np.arange(total + 1, dtype=np.float32) * scale), 0, 255).astype(np.uint8)
        inv_tw = np.float32(1.0) / np.float32(tw)
        txf = np.arange(w, dtype=np.float32) * inv_tw - np.float32(0.5)
        tx1 = np.floor(txf).astype(np.int64)
        xa = (txf - tx1.astype(np.float32)).astype(np.float32)
        xa1 = (np.float32(1.0) - xa).astype(np.float32)
        ind1 = np.maximum(tx1, 0)
        ind2 = np.minimum(tx1 + 1, gx - 1)
        luts = np.empty((gx * gy, 256), np.uint8)
        g = dict(
            pad=pad,
            tw=tw,
            th=th,
            clip=clip,
            table=table,
            ind1=ind1,
            ind2=ind2,
            xa=xa,
            xa1=xa1,
            inv_th=np.float32(1.0) / np.float32(th),
            luts=luts,
        )
        self._geom[(h, w)] = g
        return g

    def apply(self, src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """Equalise one image.

        Parameters
        ----------
        src : ndarray, uint8, shape (H, W)
        dst : ndarray, uint8, shape (H, W), C-contiguous, optional
            Where to write the result.

        Returns
        -------
        ndarray, uint8, shape (H, W)
        """
        import cv2

        src = np.asarray(src)
        if src.ndim != 2 or src.dtype != np.uint8:
            raise ValueError(f"Clahe.apply needs a 2-D uint8 image, got {src.dtype} {src.shape}")
        if self.engine == "opencv":
            if self._cv is None:
                self._cv = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.grid)
            out = self._cv.apply(src)
            if dst is not None:
                dst[...] = out
                return dst
            return out
        h, w = src.shape
        g = self._geometry(h, w)
        src = np.ascontiguousarray(src)
        if g["pad"] != (0, 0):
            ext = cv2.copyMakeBorder(src, 0, g["pad"][0], 0, g["pad"][1], cv2.BORDER_REFLECT_101)
        else:
            ext = src
        gx, gy = self.grid
        _tile_luts(ext, gx, gy, g["tw"], g["th"], g["clip"], g["table"], g["luts"])
        if dst is None or not dst.flags.c_contiguous or dst.shape != (h, w) or dst.dtype != np.uint8:
            out = np.empty((h, w), np.uint8)
        else:
            out = dst
        _interpolate(src, out, g["luts"], gx, gy, g["ind1"], g["ind2"], g["xa"], g["xa1"], g["inv_th"])
        if dst is not None and out is not dst:
            dst[...] = out
            return dst
        return out
