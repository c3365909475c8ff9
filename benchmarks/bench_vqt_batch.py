"""The 'fft' VQT engine's batch size (``max_batch_bytes``) against its speed.

Plans the same transform with several batch sizes, checks that every plan gives the
same output (``torch.equal``: each (row, FFT block) pair is transformed on its own),
then times them alternating in one process and prints the best and median of each:

    .venv/bin/python benchmarks/bench_vqt_batch.py --rows 448 --samples 1000 --reps 9
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facerhythm_core.vqt import plan_vqt
from facerhythm_core.vqt_filters import make_vqt_filters


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=448)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--mib", default="2,4,8,16,48", help="comma list of batch sizes, MiB")
    ap.add_argument("--fs", type=float, default=120.0)
    ap.add_argument("--f-max", type=float, default=54.0)
    a = ap.parse_args(argv)
    bank = make_vqt_filters(a.fs, f_max=a.f_max)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((a.rows, a.samples)).astype(np.float32))
    plans = {
        m: plan_vqt(bank, a.samples, 20, engine="fft", max_batch_bytes=m * 2**20) for m in map(int, a.mib.split(","))
    }
    first = next(iter(plans.values())).transform(x)
    for m, p in plans.items():
        if not torch.equal(p.transform(x), first):
            raise SystemExit(f"batch {m} MiB changed the output")
    times = {m: [] for m in plans}
    for _ in range(a.reps):
        for m, p in plans.items():
            t0 = time.perf_counter()
            p.transform(x)
            times[m].append(time.perf_counter() - t0)
    print(f"{a.rows} rows x {a.samples} samples, {torch.get_num_threads()} threads, {a.reps} reps; outputs equal")
    for m, v in times.items():
        print(f"max_batch_bytes {m:3d} MiB: best {min(v) * 1e3:7.1f} ms, median {np.median(v) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
