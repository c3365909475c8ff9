"""Stopping rules of the TCA fit against tensorly's, on the same tensors.

For each spectrogram of a spectrograms.h5 (normalized as the stage does: std over
time): tensorly 0.10.0 ``CP_NN_HALS`` (pytorch backend, float32, rank 10, 200
iterations, ``tol=1e-9``, seed 0: the reference's call) and our engine run to 200
iterations with its per-iteration error recorded; then every candidate rule is applied
to our error curve. Final errors are recomputed exactly (float64) from the factors
for tensorly, and read off our float64 bookkeeping at the stopping iteration for ours.

    .venv/bin/python benchmarks/tca_stopping.py SPECTROGRAMS.h5 [--videos 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def first_stop(e, rel_tol):
    """Index of the iteration after which ``e[k-1] - e[k] < rel_tol * e[k-1]`` stops."""
    return next((i for i in range(1, len(e)) if e[i - 1] - e[i] < rel_tol * e[i - 1]), len(e) - 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spectrograms")
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import h5py
    import tensorly as tl
    import torch
    from tensorly.decomposition import CP_NN_HALS

    from facerhythm_core import tca_fit, tca_metrics, tca_tensor
    from facerhythm_core.keys import natural

    torch.set_num_threads(1)
    rows = []
    with h5py.File(a.spectrograms, "r") as f:
        keys = natural(list(f["spectrograms"]))[: a.videos]
        for k in keys:
            re = tca_tensor.rearrange_data({k: f["spectrograms"][k][()]})
            x, _ = tca_tensor.normalize_tensor(re.tensors[k], re.layouts[k].dims, False, True, "time")
            with tl.backend_context("pytorch"):
                m = CP_NN_HALS(rank=10, n_iter_max=200, init="random", svd="truncated_svd", tol=1e-9, random_state=0)
                cp = m.fit_transform(torch.as_tensor(x))
            ref_err = tca_metrics.explained_variance(
                x, cp.weights.double().numpy(), [g.double().numpy() for g in cp.factors]
            ).rel_error
            fit = tca_fit.fit_cp(x, rank=10, n_iter_max=200, tol=0, rel_tol=1e-30, random_state=0)
            rows.append(dict(key=k, ref_iter=len(m.errors_), ref_err=ref_err, curve=[float(v) for v in fit.errors]))
            print(f"video {k}: tensorly {len(m.errors_)} iterations, error {ref_err:.6f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows))
    ref_it = np.array([r["ref_iter"] for r in rows])
    ref_err = np.array([r["ref_err"] for r in rows])
    print(
        f"\n{len(rows)} tensors; tensorly (tol 1e-9, float32): {ref_it.sum()} iterations, "
        f"mean error {ref_err.mean():.7f}\n"
    )
    print(
        "| rule | iterations (vs tensorly) | mean relative error difference | worst | "
        "worse by > 1e-5 |\n|---|---|---|---|---|"
    )
    for rt in (1e-5, 3e-6, 2e-6, 1e-6, 5e-7, 0.0):
        stops = [first_stop(r["curve"], rt) if rt else len(r["curve"]) - 1 for r in rows]
        it = np.array(stops) + 1
        err = np.array([r["curve"][s] for r, s in zip(rows, stops)])
        d = (err - ref_err) / ref_err
        name = f"rel_tol {rt:g}" if rt else "all 200 iterations"
        print(
            f"| {name} | {it.sum()} ({it.sum() / ref_it.sum():.2f}x) | {d.mean():+.2e} "
            f"(mean error {err.mean():.7f}) | {d.max():+.2e} | {(d > 1e-5).sum()} |"
        )


if __name__ == "__main__":
    main()
