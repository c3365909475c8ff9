"""Benchmark: the reference's TCA call vs facerhythm's torch HALS engine, side by side.

Reference-style call (face-rhythm 0.3.3 ``TCA.fit``): tensorly ``CP_NN_HALS`` on the
pytorch backend with ``rank=10, n_iter_max=200, init='random', svd='truncated_svd',
tol=1e-9``, fed ``torch.as_tensor`` of a float32 tensor. Ours: ``fit_cp`` with the same
parameters and seed (hence the same initial factors). Both final errors are recomputed
exactly (float64) from the returned factors.

Usage::

    nice .venv/bin/python benchmarks/bench_tca.py [--shape 694 36 5000] [--iters 200]
        [--threads 2] [--profile]

Wall and process CPU times are both printed: on a shared machine the CPU time is the
steadier comparison. ``--profile`` first prints a cProfile of a short tensorly run
(where the time goes).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(shape, rank=10, seed=0):
    """Planted non-negative rank-``rank`` tensor plus 20 % uniform noise, float32."""
    rng = np.random.default_rng(seed)
    fac = [rng.random((n, rank)) for n in shape]
    x = np.einsum("ir,jr,kr->ijk", *fac, optimize=True)
    x += 0.2 * x.mean() * rng.random(shape)
    return x.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[694, 36, 5000])
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--ref-tol",
        type=float,
        default=1e-9,
        help="tol of the reference call; its float32 error tracking often "
        "stops it early at 1e-9, 0 forces all iterations",
    )
    ap.add_argument("--only", choices=["ours", "reference"], default=None)
    args = ap.parse_args()

    import tensorly as tl
    import torch
    from tensorly.decomposition import CP_NN_HALS

    from facerhythm_core.tca_fit import fit_cp
    from facerhythm_core.tca_metrics import explained_variance

    torch.set_num_threads(args.threads)
    X = synthetic(tuple(args.shape))
    print(
        f"tensor {X.shape} float32, rank {args.rank}, {args.iters} iterations, "
        f"init random, seed {args.seed}, {args.threads} threads, torch {torch.__version__}, "
        f"tensorly {tl.__version__}",
        flush=True,
    )
    params = dict(rank=args.rank, init="random", svd="truncated_svd", tol=args.ref_tol, random_state=args.seed)

    if args.profile:
        with tl.backend_context("pytorch"):
            pr = cProfile.Profile()
            pr.enable()
            CP_NN_HALS(n_iter_max=10, **params).fit_transform(torch.as_tensor(X))
            pr.disable()
        print("cProfile of tensorly CP_NN_HALS, 10 iterations:")
        pstats.Stats(pr).sort_stats("tottime").print_stats(8)

    if args.only != "reference":  # ours
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_cp(
            X,
            method="CP_NN_HALS",
            n_iter_max=args.iters,
            tol=1e-9,
            rank=args.rank,
            init="random",
            random_state=args.seed,
            backend="pytorch",
            device="cpu",
            dtype="float32",
        )
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        v_ours = explained_variance(X, fit.weights, fit.factors)
        print(
            f"ours (torch HALS):    {t_ours:7.1f} s wall {c_ours:7.1f} s CPU  "
            f"iterations {len(fit.errors)}  tracked error {fit.errors[-1]:.7f}  "
            f"exact error {v_ours.rel_error:.7f}",
            flush=True,
        )

    if args.only != "ours":  # reference-style call
        with tl.backend_context("pytorch"):
            model = CP_NN_HALS(n_iter_max=args.iters, verbose=False, **params)
            t0, c0 = time.perf_counter(), time.process_time()
            cp = model.fit_transform(torch.as_tensor(X))
            t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        w = cp.weights.double().numpy()
        facs = [f.double().numpy() for f in cp.factors]
        v_ref = explained_variance(X, w, facs)
        # with tol=0 tensorly tracks no error and always runs n_iter_max iterations
        n_ref = len(model.errors_) if model.errors_ else args.iters
        tracked = f"{float(model.errors_[-1]):.7f}" if model.errors_ else "n/a"
        print(
            f"reference (tensorly): {t_ref:7.1f} s wall {c_ref:7.1f} s CPU  "
            f"iterations {n_ref}  tracked error {tracked}  "
            f"exact error {v_ref.rel_error:.7f}",
            flush=True,
        )
    if args.only is None:
        diff = max(np.abs(a - b).max() / np.abs(a).max() for a, b in zip(facs, fit.factors))
        per_it = (c_ref / n_ref) / (c_ours / len(fit.errors))
        print(
            f"speed-up {t_ref / t_ours:.2f}x wall, {c_ref / c_ours:.2f}x CPU time, "
            f"{per_it:.2f}x CPU time per iteration; exact error ours - reference = "
            f"{v_ours.rel_error - v_ref.rel_error:+.2e}; "
            f"max relative factor difference {diff:.2e}"
        )


if __name__ == "__main__":
    main()
