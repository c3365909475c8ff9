"""VQT engines: the loops that apply a prepared :class:`~facerhythm_core.vqt.VQTPlan`.

Each engine fills ``out`` (rows, F, T') with block means of the filter outputs:

- :func:`direct`: strided ``conv1d`` of the W-tap filters (any output; cuDNN on GPU),
  and :func:`tail` for the last, partial block of every engine;
- :func:`overlap_save`: overlap-save FFT blocks ('fft', magnitude only), the same
  numbers as 'direct' up to float32 rounding;
- :func:`overlap_save_numpy`: the same blocks in numpy on CPU threads ('numpy'), so a
  CPU job need not import torch (~1.6 s); the last, partial block included;
- :func:`baseband`: as 'fft', each filter evaluated at a reduced rate from a cropped
  band of its spectrum (approximate, opt-in).

:func:`conv_weight` and :func:`band_groups` make the kernels a plan holds.
"""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------- direct


def conv(x, weight, p_first: int, stride: int, count: int):
    """y[p] = sum_k h[k] x[p-k] for p = p_first + stride*i, i < count (x = 0 outside).

    ``weight`` holds the flipped taps (conv1d correlates) as (2F, 1, L): real parts,
    then imaginary parts. Returns (re, im), each (rows, F, count).
    """
    import torch

    L = weight.shape[-1]
    # conv1d output i reads x[p_first + stride*i - (L-1) ... p_first + stride*i]
    lo = p_first - (L - 1)
    hi = p_first + stride * (count - 1) + 1
    seg = x[:, max(0, lo) : max(0, min(x.shape[1], hi))]
    seg = torch.nn.functional.pad(seg, (max(0, -lo), max(0, hi - max(lo, x.shape[1]))))
    seg = seg[:, : hi - lo]
    y = torch.nn.functional.conv1d(seg[:, None, :], weight, stride=stride)
    F = weight.shape[0] // 2
    return y[:, :F, :count], y[:, F:, :count]


def direct(plan, xt, out):
    """Strided ``conv1d`` engine: the complete blocks of ``xt`` (C, S) into ``out`` (C, F, T').

    Rows and blocks go in batches of about ``plan.max_batch_bytes``.
    """
    import torch

    ds, C, F = plan.downsample_factor, xt.shape[0], plan.bank.n_freq_bins
    complex_mean = not plan.take_abs and plan.complex_pooling == "mean"
    # full-rate samples held per ds-block: 1 for complex means (one strided sample of
    # the boxcar-smoothed filter), ds otherwise
    per_block = 2 * F * (1 if complex_mean else ds) * 4 * 2
    blocks = max(1, int(plan.max_batch_bytes // (per_block * C)))
    rows = C
    if blocks < 64:  # long rows: fewer rows, longer stretches
        blocks = min(plan.n_full, 64)
        rows = max(1, int(plan.max_batch_bytes // (per_block * blocks)))
    for c0 in range(0, C, rows):
        xb = xt[c0 : c0 + rows]
        for m0 in range(0, plan.n_full, blocks):
            n = min(plan.n_full, m0 + blocks) - m0
            p0 = plan.start + m0 * ds
            if complex_mean:
                re, im = conv(xb, plan.weight, p0 + ds - 1, ds, n)
                res = torch.complex(re, im)
            else:
                re, im = conv(xb, plan.weight, p0, 1, n * ds)
                if plan.take_abs:
                    res = torch.hypot(re, im).reshape(*re.shape[:2], n, ds).mean(-1)
                else:  # reference: magnitude and angle pooled apart
                    z = torch.complex(re, im).reshape(*re.shape[:2], n, ds)
                    res = torch.polar(z.abs().mean(-1), torch.angle(z).mean(-1))
            out[c0 : c0 + rows, :, m0 : m0 + n] = res


def tail(plan, xt):
    """The last, partial block: every sample it has, full kernels."""
    import torch

    p0 = plan.start + plan.n_full * plan.downsample_factor
    re, im = conv(xt, plan.weight_tail, p0, 1, plan.start + plan.length - p0)
    if plan.take_abs:
        return torch.hypot(re, im).mean(-1, keepdim=True)
    z = torch.complex(re, im)
    if plan.complex_pooling == "mean":
        return z.mean(-1, keepdim=True)
    return torch.polar(z.abs().mean(-1, keepdim=True), torch.angle(z).mean(-1, keepdim=True))


# --------------------------------------------------------------------------- fft


def overlap_save(plan, xt, out):
    """Overlap-save FFT blocks; magnitude output only.

    FFT block r holds the input from q = start + r*B*ds - (W-1) on, so every
    block's first kept output sits at offset W-1, the first the circular convolution
    gets right; that shift is folded into the filter spectra. Re y and Im y are real
    convolutions, so each costs one irfft of the input block's rfft and the full
    complex spectrum is never formed.
    """
    import torch

    W, ds, N, B = plan.bank.win_size, plan.downsample_factor, plan.fft_size, plan.fft_blocks
    C, F = xt.shape[0], plan.bank.n_freq_bins
    n_blk = -(-plan.n_full // B)
    q0 = plan.start - (W - 1)
    need = q0 + (n_blk - 1) * B * ds + N  # one past the last index read
    padl = max(0, -q0)
    xp = torch.nn.functional.pad(xt, (padl, max(0, need - xt.shape[1])))[:, q0 + padl : need + padl]
    segs = xp.unfold(-1, N, B * ds)  # (C, n_blk, N), a view
    # (row, block) pairs per step so the irfft output (pairs x 2F x N) fits the budget
    pairs = max(1, int(plan.max_batch_bytes // (2 * F * N * 4 * 3)))
    rows, blks = max(1, pairs // n_blk), min(n_blk, pairs)
    for c0 in range(0, C, rows):
        for k0 in range(0, n_blk, blks):
            seg = segs[c0 : c0 + rows, k0 : k0 + blks]
            nr, nk = seg.shape[:2]
            Xr = torch.fft.rfft(seg.reshape(nr * nk, N), n=N)
            yy = torch.fft.irfft(Xr[:, None, :] * plan.fft_coef, n=N, dim=-1)  # (b, 2F, N)
            re, im = yy[:, :F, : B * ds], yy[:, F:, : B * ds]
            mag = re * re  # |y| as sqrt(re^2 + im^2), in place: ~10 % faster than hypot
            mag.addcmul_(im, im).sqrt_()
            r = mag.view(nr * nk, F, B, ds).mean(-1)  # (b, F, B)
            r = r.reshape(nr, nk, F, B).permute(0, 2, 1, 3).reshape(nr, F, nk * B)
            m0, m1 = k0 * B, min(plan.n_full, (k0 + nk) * B)
            out[c0 : c0 + nr, :, m0:m1] = r[..., : m1 - m0]


def overlap_save_numpy(plan, x: np.ndarray, out: np.ndarray) -> None:
    """:func:`overlap_save` in numpy: ``x`` (C, S) float32 into ``out`` (C, F, T').

    Every output bin, the last, partial one included, comes from the FFT blocks (no
    torch ``conv1d`` tail). The (row, block) pairs are cut into tiles of about
    ``plan.max_batch_bytes``, which ``plan.workers`` threads take in turn: numpy's FFTs
    and ufuncs release the GIL. Each filter is one complex inverse FFT (y itself)
    rather than two irffts (Re y, Im y): in numpy that and ``abs`` were ~10 % faster.
    Block sums go through a matrix-vector product (BLAS), ~10x faster than ``mean``
    over a short last axis.
    """
    pairs = max(1, int(plan.max_batch_bytes // (2 * plan.bank.n_freq_bins * plan.fft_size * 4 * 3)))
    segs, rows, blks, tiles = overlap_save_blocks(plan, x, out.shape[2], pairs)
    B = plan.fft_blocks

    def tile(c0: int, k0: int) -> None:
        _overlap_save_numpy_tile(plan, segs[c0 : c0 + rows, k0 : k0 + blks], out[c0 : c0 + rows], k0 * B)

    run_tiles(tiles, tile, plan.workers)


def overlap_save_blocks(plan, x: np.ndarray, n_out: int, pairs: int):
    """The overlap-save input blocks of ``x`` (C, S) for ``n_out`` output bins, and
    tiles of about ``pairs`` (row, block) pairs.

    Returns ``segs`` (C, n_blk, N), a strided view of a zero-padded copy of ``x``
    (block j starts at ``plan.start - (W - 1) + j B ds``), ``rows`` and ``blks`` (a
    tile's size) and the tiles' (first row, first block).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    W, ds, N, B = plan.bank.win_size, plan.downsample_factor, plan.fft_size, plan.fft_blocks
    C, S = x.shape
    n_blk = -(-n_out // B)
    q0 = plan.start - (W - 1)
    need = q0 + (n_blk - 1) * B * ds + N  # one past the last index read
    xp = np.zeros((C, need - q0), dtype=np.float32)  # x on [q0, need), zero outside it
    lo, hi = max(0, q0), min(S, need)
    xp[:, lo - q0 : hi - q0] = x[:, lo:hi]
    segs = sliding_window_view(xp, N, axis=1)[:, :: B * ds]  # (C, n_blk, N), a view
    rows, blks = max(1, pairs // n_blk), min(n_blk, pairs)
    tiles = [(c0, k0) for c0 in range(0, C, rows) for k0 in range(0, n_blk, blks)]
    return segs, rows, blks, tiles


def run_tiles(tiles: list, fn, workers: int) -> None:
    """``fn(*tile)`` for every tile, on ``workers`` threads that take tiles from a
    shared iterator (a thread slowed by other jobs takes fewer)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    todo = iter(tiles)
    lock = threading.Lock()

    def run():
        while True:
            with lock:
                tile = next(todo, None)
            if tile is None:
                return
            fn(*tile)

    workers = max(1, min(int(workers), len(tiles)))
    if workers == 1:
        run()
        return
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(run) for _ in range(workers)]:
            f.result()


def _overlap_save_numpy_tile(plan, seg: np.ndarray, out: np.ndarray, m0: int) -> None:
    """One tile of :func:`overlap_save_numpy`: ``seg`` (rows, blocks, N) -> bins ``m0...``
    of ``out`` (rows, F, T'); the partial last bin averages only the samples it has."""
    F, ds, N, B = plan.bank.n_freq_bins, plan.downsample_factor, plan.fft_size, plan.fft_blocks
    nr, nk = seg.shape[:2]
    X = np.fft.fft(seg.reshape(nr * nk, N), axis=-1)  # complex64 (numpy >= 2)
    z = np.fft.ifft(X[:, None, :] * plan.fft_coef, n=N, axis=-1)  # (b, F, N) complex y
    mag = np.abs(z[:, :, : B * ds])  # (b, F, B*ds) float32, contiguous
    sums = (mag.reshape(-1, ds) @ np.ones(ds, dtype=np.float32)).reshape(nr, nk, F, B)
    n_out, n_full = out.shape[2], plan.n_full
    m1 = min(n_out, m0 + nk * B)
    r = sums.transpose(0, 2, 1, 3).reshape(nr, F, nk * B)[..., : m1 - m0] / np.float32(ds)
    partial = partial_bin(plan, m0, m1)
    if partial:
        blk, col, rem = partial
        part = mag.reshape(nr, nk, F, B * ds)[:, blk, :, col * ds : col * ds + rem]
        r[..., n_full - m0] = part.sum(-1, dtype=np.float32) / np.float32(rem)
    out[:, :, m0:m1] = r


def partial_bin(plan, m0: int, m1: int) -> tuple[int, int, int] | None:
    """Where the last, partial output bin sits in a tile of bins [m0, m1), if it does:
    (the tile's block, the bin's column in it, its samples: those before the signal's
    end), else None."""
    n_full = plan.n_full
    if not m0 <= n_full < m1:
        return None
    blk, col = divmod(n_full - m0, plan.fft_blocks)
    return blk, col, plan.length - n_full * plan.downsample_factor


# --------------------------------------------------------------------------- baseband


def baseband(plan, xt, out):
    """Overlap-save blocks as 'fft', each filter evaluated at a reduced rate.

    Filter k's spectrum is kept only on the M_k = N / D_k bins around f_k where
    |H_k| exceeds ``band_eps`` of its peak; an M_k-point inverse FFT of that band
    gives y_k, up to a unit-modulus factor, at every D_k-th sample (exact
    decimation of the band-limited product, so |y_k| = |z_k|). The samples sit
    at the centres of D_k-sample runs (a phase ramp in the coefficients), and the
    block mean of |y| is the mean of the ds / D_k samples in each block
    (midpoint rule).
    """
    import torch

    W, ds, N, B = plan.bank.win_size, plan.downsample_factor, plan.fft_size, plan.fft_blocks
    C, F = xt.shape[0], plan.bank.n_freq_bins
    n_blk = -(-plan.n_full // B)
    q0 = plan.start - ds - (W - 1)
    need = q0 + (n_blk - 1) * B * ds + N
    padl = max(0, -q0)
    xp = torch.nn.functional.pad(xt, (padl, max(0, need - xt.shape[1])))[:, q0 + padl : need + padl]
    segs = xp.unfold(-1, N, B * ds)  # (C, n_blk, N), a view
    band_len = sum(len(g[0]) * g[2].shape[1] for g in plan.band_groups)
    pairs = max(1, int(plan.max_batch_bytes // ((N + 3 * band_len) * 8)))
    rows, blks = max(1, pairs // n_blk), min(n_blk, pairs)
    for c0 in range(0, C, rows):
        for k0 in range(0, n_blk, blks):
            seg = segs[c0 : c0 + rows, k0 : k0 + blks]
            nr, nk = seg.shape[:2]
            X = torch.fft.fft(seg.reshape(nr * nk, N), n=N)  # (b, N) complex
            r = torch.empty((nr * nk, F, B), device=xt.device, dtype=torch.float32)
            for ks, D, idx, coef in plan.band_groups:
                band = X[:, None, :] if D == 1 else X[:, idx]  # D = 1: no gather
                z = torch.fft.ifft(band * coef, dim=-1)[..., : B * ds // D]
                a = torch.view_as_real(z).square().sum(-1).sqrt_()  # |z|, faster than abs
                r[:, ks] = a.reshape(nr * nk, len(ks), B, ds // D).mean(-1)
            r = r.reshape(nr, nk, F, B).permute(0, 2, 1, 3).reshape(nr, F, nk * B)
            m0, m1 = k0 * B, min(plan.n_full, (k0 + nk) * B)
            out[c0 : c0 + nr, :, m0:m1] = r[..., : m1 - m0]


def band_groups(h: np.ndarray, N: int, ds: int, j0: int, eps: float, oversample: float, device):
    """Per decimation D (a divisor of ds): filters, (n, M) bin indices and coefficients.

    Filter k keeps the shortest circular run of N-point DFT bins holding every bin with
    |H_k| > eps * max |H_k|; D_k is the largest divisor of ds with N / D_k >= oversample
    times that run. Coefficient m (bin b = a + m) is H_k[b] e^{2 pi i b (j0 + (D-1)/2) / N} / D:
    the block offset, the shift to the centre of each D-sample run and the
    decimation's scale.
    """
    import torch

    H = np.fft.fft(h, n=N, axis=1)
    A = np.abs(H)
    divisors = [d for d in range(ds, 0, -1) if ds % d == 0 and N % d == 0]
    plan = {}
    for k in range(h.shape[0]):
        on = np.nonzero(A[k] > eps * A[k].max())[0]
        gaps = np.diff(np.concatenate([on, [on[0] + N]]))
        g = int(np.argmax(gaps))
        first = on[(g + 1) % len(on)]  # start of the run after the gap
        width = N - int(gaps[g]) + 1
        D = next((d for d in divisors if N // d >= oversample * width), 1)
        M = N // D
        a = int(first) - (M - width) // 2  # centre the run in the band
        # signed start: the bins are then the band's true frequencies, which matters for
        # the half-sample shift (D even) of the band-limited samples
        a = (a + N // 2) % N - N // 2 if D > 1 else 0  # D = 1: all bins, in order
        b = a + np.arange(M)
        c = H[k, b % N] * np.exp(2j * np.pi * b * (j0 + (D - 1) / 2) / N) / D
        plan.setdefault(D, []).append((k, b % N, c))
    groups = []
    for D in sorted(plan, reverse=True):
        ks = [k for k, _, _ in plan[D]]
        bins = np.stack([b for _, b, _ in plan[D]])
        coefs = np.stack([c for _, _, c in plan[D]])
        groups.append(
            (
                torch.as_tensor(ks, device=device),
                D,
                torch.as_tensor(bins, device=device),
                torch.as_tensor(coefs.astype(np.complex64), device=device),
            )
        )
    return tuple(groups)


def conv_weight(h: np.ndarray, device):
    """(F, L) complex taps -> (2F, 1, L) float32 conv1d weight, flipped (conv1d correlates)."""
    import torch

    hf = h[:, ::-1]
    w = np.concatenate([hf.real, hf.imag], axis=0)[:, None, :].astype(np.float32)
    return torch.as_tensor(np.ascontiguousarray(w), device=device)
