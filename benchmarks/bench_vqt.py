"""Micro-benchmark of the VQT engines against a restatement of the reference transform.

The reference's ``vqt.VQT.forward`` (vqt 0.1.3, shared/reference/algorithms.md 7.2) is restated with
torch: batches of 10 rows, full-length complex FFTs of the input and of every kernel
per batch, crop, magnitude, ``avg_pool1d(ceil_mode=True)``. Our engines run on the
same data, interleaved with it in every repetition, so each speed-up is a ratio of
runs made at nearly the same time (the machine is shared; absolute rates swing).

Errors are measured against the exact 'fft' engine (itself within 1e-5 of a direct
restatement, tests/test_vqt.py): max |err| / max over the row (all bins and times),
and max |err| / max over the (row, bin) time series, and the relative Frobenius
error ||out - exact|| / ||exact|| over everything. The "floor" row times only the
irreducible exact work (irffts + magnitudes of the 'fft' engine, see ``floor_forward``).
One run prints a markdown table:

    nice -n 5 .venv/bin/python benchmarks/bench_vqt.py --rows 200 --samples 20000 --reps 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facerhythm_core.vqt import plan_vqt
from facerhythm_core.vqt_filters import make_vqt_filters


def reference_forward(x: torch.Tensor, filters: torch.Tensor, ds: int, batch: int = 10):
    """Restated ``vqt.VQT.forward`` for 'valid' padding and magnitude output."""
    from scipy.fft import next_fast_len

    W = filters.shape[-1]
    outs = []
    for i in range(0, x.shape[0], batch):
        xb = x[i : i + batch][:, None, :]
        n = next_fast_len(xb.shape[-1] + W - 1)
        spec = torch.fft.fft(xb, n=n) * torch.fft.fft(filters[None], n=n)
        y = torch.fft.ifft(spec, n=n)[..., W - 1 : xb.shape[-1]].abs()
        outs.append(torch.nn.functional.avg_pool1d(y, ds, ds, ceil_mode=True, count_include_pad=False))
    return torch.cat(outs)


def face_like_rows(rows: int, samples: int, fs: float, seed: int = 0) -> np.ndarray:
    """Face-like displacement rows: random-walk drift + noise + rhythms; some white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / fs
    x = np.cumsum(rng.standard_normal((rows, samples)), axis=1) * 0.05
    x += 0.3 * rng.standard_normal((rows, samples))
    x += np.sin(2 * np.pi * rng.uniform(2, 12, (rows, 1)) * t) * rng.uniform(0, 1, (rows, 1))
    x[::7] = rng.standard_normal((len(x[::7]), samples))  # white noise rows
    return x.astype(np.float32)


def floor_forward(plan, xt: torch.Tensor):
    """Only the irreducible exact work of ``plan`` ('fft'): irffts + magnitudes.

    An exact full-rate magnitude needs one complex output per filter per sample: here
    the 2F irffts (Re y, Im y) of each (row, FFT block) pair and their magnitudes, with the
    batch size the engine uses, on a fixed product spectrum. No input FFT, no product,
    no pooling, no copies: a lower bound on the 'fft' engine's time, not a transform.
    """
    F, N = plan.bank.n_freq_bins, plan.fft_size
    n_blk = -(-plan.n_full // plan.fft_blocks)
    n_pairs = xt.shape[0] * n_blk
    step = max(1, min(n_pairs, int(plan.max_batch_bytes // (2 * F * N * 4 * 3))))
    prod = plan.fft_coef[None].expand(step, -1, -1).contiguous()  # (step, 2F, N//2+1)
    keep = plan.fft_blocks * plan.downsample_factor
    for p0 in range(0, n_pairs, step):
        b = min(step, n_pairs - p0)
        yy = torch.fft.irfft(prod[:b], n=N, dim=-1)
        mag = yy[:, :F, :keep] * yy[:, :F, :keep]  # |y|, as the engine computes it
        mag.addcmul_(yy[:, F:, :keep], yy[:, F:, :keep]).sqrt_()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fs", type=float, default=120.0, help="sample rate, Hz")
    ap.add_argument("--f-max", type=float, default=54.0, help="top centre frequency, Hz")
    ap.add_argument(
        "--engines",
        default="reference,fft,floor,baseband:1e-2:1,baseband:1e-3:1,baseband:1e-4:1",
        help="comma list of reference, fft, numpy, numba, direct, floor, baseband[:eps:oversample]",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    fs, ds = args.fs, 20
    bank = make_vqt_filters(fs, f_max=args.f_max)  # default W=481, F=36
    x = face_like_rows(args.rows, args.samples, fs)
    xt = torch.as_tensor(x)
    filt = torch.as_tensor(bank.filters)
    exact_plan = plan_vqt(bank, args.samples, ds, engine="fft")
    runs = {}
    for name in args.engines.split(","):
        if name == "reference":
            runs[name] = lambda: reference_forward(xt, filt, ds)
            continue
        if name == "floor":
            runs[name] = lambda: floor_forward(exact_plan, xt)
            continue
        eng, *opt = name.split(":")
        kw = {}
        if opt:
            kw = dict(band_eps=float(opt[0]), band_oversample=float(opt[1]))
        plan = plan_vqt(bank, args.samples, ds, engine=eng, workers=args.threads, **kw)
        if eng in ("numpy", "numba"):  # numpy in, numpy out, as the spectrogram stage calls it
            runs[name] = (lambda p: lambda: torch.from_numpy(p.transform_array(x)))(plan)
        else:
            runs[name] = (lambda p: lambda: p.transform(xt))(plan)

    exact = exact_plan.transform(xt).numpy()
    row_max = np.abs(exact).max(axis=(1, 2), keepdims=True)
    bin_max = np.abs(exact).max(axis=2, keepdims=True)
    errors = {}
    times = {k: [] for k in runs}
    for rep in range(args.reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if rep == 0 and out is not None:
                diff = out.numpy().astype(np.float64) - exact
                err = np.abs(diff)
                errors[name] = (
                    np.linalg.norm(diff) / np.linalg.norm(exact),
                    (err / row_max).max(),
                    (err / bin_max).max(),
                )
    base = np.array(times.get("reference", times[next(iter(times))]))
    print(
        f"\n{args.rows} rows x {args.samples} samples at {fs:g} Hz (W={bank.win_size}, "
        f"F={bank.n_freq_bins}, ds={ds}, fft N={exact_plan.fft_size}), {args.reps} reps, "
        f"{args.threads} threads; errors vs the exact 'fft' engine\n"
    )
    print(
        "| engine | best s | M samples/s (best) | x reference, best / best | x reference, "
        "per-rep ratios (median; runs) | rel. Frobenius err | max err / row max "
        "| max err / (row, bin) max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, v in times.items():
        v = np.array(v)
        ratios = base / v
        e = errors.get(name)
        es = f"{e[0]:.1e} | {e[1]:.1e} | {e[2]:.1e}" if e is not None else "n/a | n/a | n/a"
        print(
            f"| {name} | {v.min():.2f} | {args.rows * args.samples / v.min() / 1e6:.2f} "
            f"| {base.min() / v.min():.2f} "
            f"| {np.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) | {es} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
