"""The 'numba' VQT engine: overlap-save blocks with a fused, compiled inverse FFT.

The 'numpy' engine spends most of its time in three passes over (blocks, F, N)
complex arrays: the product spectra, numpy's inverse FFTs and the magnitudes. This
engine does all three, and the block sums, in one compiled loop per filter while a
tile's data stay in the caches:

- a tile holds ``L`` (row, block) pairs ("lanes"), stored lane-last, so that every
  butterfly of the FFT is a loop over lanes that LLVM turns into SIMD instructions;
- filter k's product spectrum is gathered in bit-reversed order straight from the
  lanes' half spectra (a real block's spectrum is Hermitian);
- a radix-4 (two fused radix-2 stages) decimation-in-time inverse FFT of length N,
  a power of two, runs in place;
- |y| of the kept samples is summed over each ds-sample bin, the partial last bin
  included.

On the 2-core EPYC VM, one thread, N = 1024, 128 lanes: 1.5 us a filter and lane
against 3.2-3.6 us for numpy's product, ``ifft`` and ``abs``. The numbers equal
'numpy''s up to float32 rounding (the sums are reassociated: ``fastmath``). numba
compiles the kernel once per machine (~1.5 s; cached on disk beside this module, or
under ``NUMBA_CACHE_DIR``). Importing this module loads numba (~0.2 s) and the
kernel, with numba's one-time set-up (~0.3 s): ~0.5 s a job, against torch's ~1.6 s.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

try:  # numba is a dependency; without it 'auto' falls back to the 'numpy' engine
    import numba as _numba
except Exception:  # pragma: no cover - ImportError, or llvmlite failing to load
    _numba = None

HAVE_NUMBA = _numba is not None

#: lanes a tile holds at most. On the 2-core EPYC VM, one thread, 40 rows x 60 000
#: samples (N = 4096): 0.20-0.22 s with 256 lanes, 0.23 with 128, 0.31 with 64, 0.28
#: with 512 (numpy engine 0.45); 706 rows x 1000 samples (N = 1024): 0.035-0.038 s
#: with 64 to 1024 lanes (numpy engine 0.096)
MAX_LANES = 256


def _jit(fn=None, *, inline: str = "never", signature=None):
    """numba ``njit`` (cached, nogil, fastmath); ``inline="always"`` for the kernel's
    parts. With a ``signature`` the kernel is loaded (or compiled) when this module is
    imported, so that numba's one-time set-up (~0.3 s: its typing and lowering
    registries) is part of importing the engine, as importing torch is for the others."""
    if fn is None:
        return lambda f: _jit(f, inline=inline, signature=signature)
    if _numba is None:  # pragma: no cover
        return fn
    args = (signature,) if signature else ()
    try:
        return _numba.njit(*args, cache=True, nogil=True, fastmath=True, inline=inline)(fn)
    except RuntimeError as exc:  # pragma: no cover - no writable cache location at all
        logger.info("numba cannot cache the VQT kernel (%s); compiling per process", exc)
        return _numba.njit(*args, cache=False, nogil=True, fastmath=True, inline=inline)(fn)


def fft_tables(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit-reversal permutation (N,) int64 and inverse-FFT twiddles
    e^{2 pi i t / N}, t < N, as real and imaginary parts (N,) float32."""
    bits = N.bit_length() - 1
    if N < 2 or N != 1 << bits:
        raise ValueError(f"the 'numba' VQT engine needs a power-of-two FFT length, got {N}")
    t = np.arange(N)
    rev = np.zeros(N, dtype=np.int64)
    for b in range(bits):
        rev |= ((t >> b) & 1) << (bits - 1 - b)
    w = np.exp(2j * np.pi * t / N)
    return rev, w.real.astype(np.float32), w.imag.astype(np.float32)


@_jit(inline="always")
def _gather_product(xr, xi, hr, hi, rev, ar, ai):  # pragma: no cover
    """ar + i ai = (X H)[rev[i]]: bit-reversed order, X[N - j] = conj X[j]."""
    N = hr.shape[0]
    L = xr.shape[1]
    for i in range(N):
        j = rev[i]
        a = hr[j]
        b = hi[j]
        if j <= N // 2:
            for lane in range(L):
                ar[i, lane] = xr[j, lane] * a - xi[j, lane] * b
                ai[i, lane] = xr[j, lane] * b + xi[j, lane] * a
        else:
            jj = N - j
            for lane in range(L):
                ar[i, lane] = xr[jj, lane] * a + xi[jj, lane] * b
                ai[i, lane] = xr[jj, lane] * b - xi[jj, lane] * a


@_jit(inline="always")
def _radix4_stage(ar, ai, twr, twi, m):  # pragma: no cover
    """Decimation-in-time stages m and 2m in one pass: 4 points p0..p3 a butterfly."""
    N, L = ar.shape
    h = m // 2
    s1 = N // m
    s2 = N // (2 * m)
    for k0 in range(0, N, 2 * m):
        for j in range(h):
            w1r = twr[j * s1]
            w1i = twi[j * s1]
            w2r = twr[j * s2]
            w2i = twi[j * s2]
            w3r = twr[(j + h) * s2]
            w3i = twi[(j + h) * s2]
            p0 = k0 + j
            p1 = p0 + h
            p2 = p0 + m
            p3 = p2 + h
            for lane in range(L):
                tr = w1r * ar[p1, lane] - w1i * ai[p1, lane]
                ti = w1r * ai[p1, lane] + w1i * ar[p1, lane]
                b0r = ar[p0, lane] + tr
                b0i = ai[p0, lane] + ti
                b1r = ar[p0, lane] - tr
                b1i = ai[p0, lane] - ti
                tr = w1r * ar[p3, lane] - w1i * ai[p3, lane]
                ti = w1r * ai[p3, lane] + w1i * ar[p3, lane]
                b2r = ar[p2, lane] + tr
                b2i = ai[p2, lane] + ti
                b3r = ar[p2, lane] - tr
                b3i = ai[p2, lane] - ti
                tr = w2r * b2r - w2i * b2i
                ti = w2r * b2i + w2i * b2r
                ar[p0, lane] = b0r + tr
                ai[p0, lane] = b0i + ti
                ar[p2, lane] = b0r - tr
                ai[p2, lane] = b0i - ti
                tr = w3r * b3r - w3i * b3i
                ti = w3r * b3i + w3i * b3r
                ar[p1, lane] = b1r + tr
                ai[p1, lane] = b1i + ti
                ar[p3, lane] = b1r - tr
                ai[p3, lane] = b1i - ti


@_jit(inline="always")
def _radix2_stage(ar, ai, twr, twi, m):  # pragma: no cover
    """Decimation-in-time stage m: pairs m/2 apart."""
    N, L = ar.shape
    h = m // 2
    s1 = N // m
    for k0 in range(0, N, m):
        for j in range(h):
            wr = twr[j * s1]
            wi = twi[j * s1]
            p = k0 + j
            q = p + h
            for lane in range(L):
                tr = wr * ar[q, lane] - wi * ai[q, lane]
                ti = wr * ai[q, lane] + wi * ar[q, lane]
                ur = ar[p, lane]
                ui = ai[p, lane]
                ar[p, lane] = ur + tr
                ai[p, lane] = ui + ti
                ar[q, lane] = ur - tr
                ai[q, lane] = ui - ti


@_jit(inline="always")
def _magnitude_sum(ar, ai, a, b, acc):  # pragma: no cover
    """acc[lane] = sum of |ar + i ai| over samples [a, b)."""
    L = ar.shape[1]
    for lane in range(L):
        acc[lane] = 0.0
    for i in range(a, b):
        for lane in range(L):
            acc[lane] += np.sqrt(ar[i, lane] * ar[i, lane] + ai[i, lane] * ai[i, lane])


_F2 = "float32[:, ::1]"
_KERNEL_SIGNATURE = (
    f"void({_F2}, {_F2}, {_F2}, {_F2}, int64[::1], float32[::1], float32[::1], "
    f"int64, int64, int64, int64, float32[:, :, ::1], {_F2})"
)


@_jit(signature=_KERNEL_SIGNATURE)
def _tile_bin_sums(xr, xi, hr, hi, rev, twr, twi, ds, n_bins, p_col, p_rem, sums, part):  # pragma: no cover
    """Block sums of |ifft(X H_k)| for every filter k and lane.

    xr, xi : (N//2 + 1, L) half spectra of the lanes' real blocks.
    hr, hi : (F, N) filter spectra (phase-shifted, scaled by 1/N).
    sums : (F, n_bins, L) out: sum of |y| over samples [b ds, (b+1) ds).
    part : (F, L) out: sum of |y| over [p_col ds, p_col ds + p_rem) (p_rem 0: unused).
    """
    F, N = hr.shape
    L = xr.shape[1]
    ar = np.empty((N, L), np.float32)
    ai = np.empty((N, L), np.float32)
    for k in range(F):
        _gather_product(xr, xi, hr[k], hi[k], rev, ar, ai)
        m = 2  # stage m (pairs m/2 apart) fused with stage 2m
        while 2 * m <= N:
            _radix4_stage(ar, ai, twr, twi, m)
            m *= 4
        if m <= N:  # log2 N odd: one radix-2 stage left
            _radix2_stage(ar, ai, twr, twi, m)
        for bn in range(n_bins):
            _magnitude_sum(ar, ai, bn * ds, (bn + 1) * ds, sums[k, bn])
        _magnitude_sum(ar, ai, p_col * ds, p_col * ds + p_rem, part[k])


def overlap_save_numba(plan, x: np.ndarray, out: np.ndarray) -> None:
    """The 'numba' engine: ``x`` (C, S) float32 into ``out`` (C, F, T').

    The same blocks, tiles and threads as
    :func:`~facerhythm_core.vqt_engines.overlap_save_numpy`; each tile's forward
    FFTs are numpy's ``rfft``, the rest is :func:`_tile_bin_sums`.
    """
    from .vqt_engines import overlap_save_blocks, partial_bin, run_tiles

    N = plan.fft_size
    rev, twr, twi = fft_tables(N)
    coef = plan.fft_coef / np.float32(N)  # numpy's ifft scale, folded in
    hr = np.ascontiguousarray(coef.real, dtype=np.float32)
    hi = np.ascontiguousarray(coef.imag, dtype=np.float32)
    n_pairs = x.shape[0] * -(-out.shape[2] // plan.fft_blocks)
    # at least 4 tiles, so that a thread slowed by other jobs takes fewer; the tiles
    # do not depend on the thread count, nor then do the numbers
    lanes = max(16, min(MAX_LANES, -(-n_pairs // 4)))
    segs, rows, blks, tiles = overlap_save_blocks(plan, x, out.shape[2], lanes)
    F, ds, B = plan.bank.n_freq_bins, plan.downsample_factor, plan.fft_blocks
    n_out, n_full = out.shape[2], plan.n_full

    def tile(c0: int, k0: int) -> None:
        seg = segs[c0 : c0 + rows, k0 : k0 + blks]
        nr, nk = seg.shape[:2]
        X = np.fft.rfft(seg.reshape(nr * nk, N), axis=-1)  # (lanes, N/2+1) complex64
        xr = np.ascontiguousarray(X.real.T)
        xi = np.ascontiguousarray(X.imag.T)
        m0 = k0 * B
        m1 = min(n_out, m0 + nk * B)
        p_blk, p_col, p_rem = partial_bin(plan, m0, m1) or (0, 0, 0)
        sums = np.empty((F, B, nr * nk), np.float32)
        part = np.empty((F, nr * nk), np.float32)
        _tile_bin_sums(xr, xi, hr, hi, rev, twr, twi, ds, B, p_col, p_rem, sums, part)
        r = sums.reshape(F, B, nr, nk).transpose(2, 0, 3, 1).reshape(nr, F, nk * B)[..., : m1 - m0]
        r = r / np.float32(ds)
        if p_rem:
            r[..., n_full - m0] = part.reshape(F, nr, nk)[:, :, p_blk].T / np.float32(p_rem)
        out[c0 : c0 + nr, :, m0:m1] = r

    run_tiles(tiles, tile, plan.workers)
