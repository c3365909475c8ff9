"""Micro-benchmark of the VQT engines against a restatement of the reference transform.

The reference's ``vqt.VQT.forward`` (vqt 0.1.3, algorithms.md 7.2) is restated with
torch: batches of 10 rows, full-length complex FFTs of the input and of every kernel
per batch, crop, magnitude, ``avg_pool1d(ceil_mode=True)``. Our engines run on the
same data, interleaved with it in every repetition, so each speed-up is a ratio of
runs made at nearly the same time (the machine is shared; absolute rates swing).

Errors are measured against the exact 'fft' engine (itself within 1e-5 of a direct
restatement, tests/test_vqt.py): max |err| / max over the row (all bins and times),
and max |err| / max over the (row, bin) time series.

    nice -n 5 .venv/bin/python benchmarks/bench_vqt.py --rows 100 --samples 20000 --reps 3 \
        --threads 1 --engines reference,fft,baseband,baseband:1e-4:1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facerhythm_core.vqt import make_vqt_filters, plan_vqt


def reference_forward(x: torch.Tensor, filters: torch.Tensor, ds: int, batch: int = 10):
    """Restated ``vqt.VQT.forward`` for 'valid' padding and magnitude output."""
    from scipy.fft import next_fast_len

    W = filters.shape[-1]
    outs = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch][:, None, :]
        n = next_fast_len(xb.shape[-1] + W - 1)
        spec = torch.fft.fft(xb, n=n) * torch.fft.fft(filters[None], n=n)
        y = torch.fft.ifft(spec, n=n)[..., W - 1:xb.shape[-1]].abs()
        outs.append(torch.nn.functional.avg_pool1d(y, ds, ds, ceil_mode=True,
                                                   count_include_pad=False))
    return torch.cat(outs)


def face_like_rows(rows: int, samples: int, fs: float, seed: int = 0) -> np.ndarray:
    """Face-like displacement rows: random-walk drift + noise + rhythms; some white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / fs
    x = np.cumsum(rng.standard_normal((rows, samples)), axis=1) * 0.05
    x += 0.3 * rng.standard_normal((rows, samples))
    x += np.sin(2 * np.pi * rng.uniform(2, 12, (rows, 1)) * t) * rng.uniform(0, 1, (rows, 1))
    x[::7] = rng.standard_normal((len(x[::7]), samples))          # white noise rows
    return x.astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="reference,fft,baseband",
                    help="comma list of reference, fft, direct, baseband[:eps:oversample]")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    fs, ds = 120.0, 20
    bank = make_vqt_filters(fs, f_max=54.0)                   # W=481, F=36
    x = face_like_rows(args.rows, args.samples, fs)
    xt = torch.as_tensor(x)
    filt = torch.as_tensor(bank.filters)
    runs = {}
    for name in args.engines.split(","):
        if name == "reference":
            runs[name] = lambda: reference_forward(xt, filt, ds)
            continue
        eng, *opt = name.split(":")
        kw = {}
        if opt:
            kw = dict(band_eps=float(opt[0]), band_oversample=float(opt[1]))
        plan = plan_vqt(bank, args.samples, ds, engine=eng, **kw)
        runs[name] = (lambda p: (lambda: p.transform(xt)))(plan)

    exact = plan_vqt(bank, args.samples, ds, engine="fft").transform(xt).numpy()
    row_max = np.abs(exact).max(axis=(1, 2), keepdims=True)
    bin_max = np.abs(exact).max(axis=2, keepdims=True)
    times = {k: [] for k in runs}
    for rep in range(args.reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if rep == 0:
                err = np.abs(out.numpy() - exact)
                print(f"{name:22s} err/row max {(err / row_max).max():.2e}  "
                      f"err/(row,bin) max {(err / bin_max).max():.2e}", flush=True)
    base = np.array(times.get("reference", times[next(iter(times))]))
    print(f"{args.rows} rows x {args.samples} samples, {args.reps} reps, "
          f"{args.threads} threads")
    for name, v in times.items():
        v = np.array(v)
        ratios = base / v
        print(f"{name:22s} median {np.median(v):7.2f} s  "
              f"{args.rows * args.samples / np.median(v) / 1e6:5.2f} M samples/s  "
              f"x reference: median {np.median(ratios):.2f} (runs {np.round(ratios, 2).tolist()})")


if __name__ == "__main__":
    main()
