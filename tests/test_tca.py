"""Tests of the TCA stage (facerhythm_core.tca) on small synthetic tensors."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorly as tl
import torch

from facerhythm_core import hals, tca, tca_fit, tca_metrics, tca_tensor
from facerhythm_core.errors import TCAError

REPO = Path(__file__).resolve().parents[1]


def planted(shape, rank, seed=0, noise=0.0):
    """Non-negative rank-`rank` tensor with sparse-ish (well separated) factors."""
    rng = np.random.default_rng(seed)
    fac = []
    for n in shape:
        f = rng.random((n, rank)) ** 4  # peaky columns: components easy to tell apart
        fac.append(f)
    x = np.einsum("ir,jr,kr->ijk", *fac)
    x = x + noise * x.std() * rng.random(shape)
    return x, fac


def spectros(n_points=5, n_freq=4, lengths=(20, 30), seed=0, complex_=False):
    rng = np.random.default_rng(seed)
    out = {}
    for i, t in enumerate(lengths):
        a = rng.random((2, n_points, n_freq, t)).astype(np.float32)
        if complex_:
            a = (a + 1j * rng.random(a.shape)).astype(np.complex64)
        out[str(i)] = a
    return out


# --- fitting ---------------------------------------------------------------------


def test_planted_low_rank_tensor_is_recovered():
    x, fac = planted((25, 10, 60), rank=3, seed=1, noise=0.01)
    fit = tca_fit.fit_cp(x, rank=3, n_iter_max=300, init="random", tol=1e-7, random_state=0)
    score, per, perm = tca_metrics.factor_match_score(fac, fit.factors)
    assert score >= 0.95, (score, per)
    assert sorted(perm.tolist()) == [0, 1, 2]
    assert all((f >= 0).all() for f in fit.factors)
    # the tracked error (tensorly's expansion ||X||^2 + ||M||^2 - 2<X, M>, from float32
    # products) agrees with the exactly recomputed one up to float32 cancellation
    var = tca_metrics.explained_variance(x, fit.weights, fit.factors)
    assert fit.errors[-1] == pytest.approx(var.rel_error, rel=2e-2)
    assert fit.errors[-1] < fit.errors[0]


def _tensorly_cp_nn_hals(x, backend, **kw):
    """tensorly's own CP_NN_HALS on ``x`` (float64) with ``backend``: (factors as ndarrays, errors)."""
    with tl.backend_context(backend):
        model = tl.decomposition.CP_NN_HALS(init="random", tol=1e-12, **kw)
        cp = model.fit_transform(torch.as_tensor(x) if backend == "pytorch" else x)
    return [np.asarray(f) for f in cp.factors], [float(e) for e in model.errors_]


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_our_hals_engines_match_tensorly_cp_nn_hals(engine):
    backend = "pytorch" if engine == "torch" else "numpy"
    rng = np.random.default_rng(3)
    x = rng.random((12, 7, 40))
    ref, ref_errors = _tensorly_cp_nn_hals(x, backend, rank=4, n_iter_max=25, random_state=5)
    ours = tca_fit.fit_cp(
        x, rank=4, n_iter_max=25, init="random", tol=1e-12, random_state=5, dtype="float64", engine=engine
    )
    assert ours.engine == engine
    for a, b in zip(ref, ours.factors):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.errors, ref_errors, rtol=1e-8)
    # and the same through our tensorly path
    via_tl = tca_fit.fit_cp(x, rank=4, n_iter_max=25, tol=1e-12, random_state=5, dtype="float64", engine="tensorly")
    assert via_tl.engine == "tensorly"
    for a, b in zip(via_tl.factors, ours.factors):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # a 4-axis tensor (stacked videos) goes through the general contractions
    x4 = rng.random((3, 8, 5, 30))
    ref4, _ = _tensorly_cp_nn_hals(x4, backend, rank=3, n_iter_max=10, random_state=1)
    ours4 = tca_fit.fit_cp(x4, rank=3, n_iter_max=10, tol=1e-12, random_state=1, dtype="float64", engine=engine)
    for a, b in zip(ref4, ours4.factors):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)


def test_svd_init_equivalence_and_stop_rule():
    x, _ = planted((10, 6, 30), rank=2, seed=4)
    with tl.backend_context("pytorch"):
        model = tl.decomposition.CP_NN_HALS(rank=2, n_iter_max=500, init="svd", tol=1e-6)
        ref = model.fit_transform(torch.as_tensor(x))
    ours = tca_fit.fit_cp(x, rank=2, n_iter_max=500, init="svd", tol=1e-6, dtype="float64")
    # tol stops both at the same iteration, long before n_iter_max
    assert len(ours.errors) == len(model.errors_) < 500
    for a, b in zip(ref.factors, ours.factors):
        np.testing.assert_allclose(b, a.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("engine,backend", [("torch", "pytorch"), ("tensorly", "pytorch"), ("tensorly", "numpy")])
def test_backend_does_not_leak(engine, backend):
    x = np.random.default_rng(0).random((6, 5, 8))
    for outer in ("numpy", "pytorch"):
        with tl.backend_context(outer):
            before = tl.get_backend()
            tca_fit.fit_cp(x, rank=2, n_iter_max=3, engine=engine, backend=backend)
            assert tl.get_backend() == before == outer


@pytest.mark.parametrize(
    "method,extra", [("CP", {}), ("ConstrainedCP", {"non_negative": True}), ("RandomizedCP", {"n_samples": 20})]
)
def test_other_methods_run_through_tensorly(method, extra):
    x, _ = planted((8, 6, 20), rank=2, seed=2)
    fit = tca_fit.fit_cp(x, method=method, rank=2, n_iter_max=20, method_params=extra)
    assert fit.engine == "tensorly"
    assert [f.shape for f in fit.factors] == [(8, 2), (6, 2), (20, 2)]
    var = tca_metrics.explained_variance(x, fit.weights, fit.factors)
    assert var.evr_model > 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_init_is_tensorlys_without_tensorly(dtype):
    from tensorly.decomposition._cp import initialize_cp

    x = torch.rand((7, 5, 9), dtype=dtype)
    for seed in (0, 3, 12345):
        ours = hals.initial_factors(x, 4, "random", "truncated_svd", seed)
        with tl.backend_context("pytorch"):
            ref = initialize_cp(x, 4, init="random", non_negative=True, random_state=seed, normalize_factors=False)
        for a, b in zip(ours, ref.factors):
            assert a.dtype == b.dtype == dtype
            assert torch.equal(a, b)


@pytest.mark.parametrize("tol, sweeps", [(1e-8, 5), (0.3, 5), (1e-8, 1), (1e-8, 2)])
def test_nnls_kernels_agree(tol, sweeps):
    """Both CPU kernels equal a plain restatement of tensorly's sweeps, whose early stop
    measures every sweep's change (the kernels skip the last sweep's measure: unused)."""
    from facerhythm_core import hals_kernels

    rng = np.random.default_rng(7)
    for n in (3, 40, 700):
        A = rng.random((n + 5, 6))
        UtU = A.T @ A
        UtM = rng.random((6, n)) * 4
        V0 = rng.random((6, n))
        loop = torch.as_tensor(V0.copy())
        hals.hals_nnls(torch.as_tensor(UtM), torch.as_tensor(UtU), loop, n_iter_max=sweeps, tol=tol, kernel="numpy")
        # the torch loop (the GPU path), forced by calling it on the CPU copy
        ref = torch.as_tensor(V0.copy())
        diag = torch.as_tensor(UtU).diagonal().tolist()
        U, M = torch.as_tensor(UtU), torch.as_tensor(UtM)
        err0 = None
        for it in range(sweeps):
            err = 0.0
            for k, d in enumerate(diag):
                new = ((M[k] - U[k] @ ref + d * ref[k]) / d).clamp_(min=0)
                err = err + float((ref - new).square().sum())
                ref[k] = new
            err0 = err if it == 0 else err0
            if err < tol * err0:
                break
        np.testing.assert_allclose(loop.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
        if hals_kernels.HAVE_NUMBA:
            nb = torch.as_tensor(V0.copy())
            hals.hals_nnls(torch.as_tensor(UtM), torch.as_tensor(UtU), nb, n_iter_max=sweeps, tol=tol, kernel="numba")
            np.testing.assert_allclose(nb.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
            # float32 factors: the two CPU kernels round the same float64 sums
            v32 = torch.as_tensor(V0.astype(np.float32))
            a, b = v32.clone(), v32.clone()
            u32, m32 = torch.as_tensor(UtU.astype(np.float32)), torch.as_tensor(UtM.astype(np.float32))
            hals.hals_nnls(m32, u32, a, n_iter_max=sweeps, tol=tol, kernel="numpy")
            hals.hals_nnls(m32, u32, b, n_iter_max=sweeps, tol=tol, kernel="numba")
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_rel_tol_stops_when_the_error_stops_improving():
    x, _ = planted((20, 8, 50), rank=3, seed=6, noise=0.3)
    full = tca_fit.fit_cp(x, rank=3, n_iter_max=300, tol=0, rel_tol=1e-30, random_state=0)
    rt = 1e-4
    fit = tca_fit.fit_cp(x, rank=3, n_iter_max=300, tol=0, rel_tol=rt, random_state=0)
    e = full.errors
    want = next(i for i in range(1, len(e)) if e[i - 1] - e[i] < rt * e[i - 1])
    assert len(fit.errors) == want + 1 < 300
    np.testing.assert_array_equal(fit.errors, e[: want + 1])
    # the same run, only stopped: the factors are those of that iteration
    again = tca_fit.fit_cp(x, rank=3, n_iter_max=want + 1, tol=0, rel_tol=0, random_state=0)
    for a, b in zip(fit.factors, again.factors):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TCAError, match="rel_tol"):
        tca_fit.fit_cp(x, rank=3, rel_tol=-1)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_small_fits_run_on_one_thread_and_restore_the_count(engine, monkeypatch):
    from facerhythm_core.runtime import numpy_blas_threads

    before = torch.get_num_threads(), numpy_blas_threads()
    assert before[1] is not None  # the pip wheel's OpenBLAS, controlled through ctypes
    torch.set_num_threads(2)
    numpy_blas_threads(2)
    try:
        seen = []
        orig = getattr(tca_fit, f"hals_cp_{engine}")

        def spy(*a, **k):
            seen.append((torch.get_num_threads(), numpy_blas_threads()))
            return orig(*a, **k)

        monkeypatch.setattr(tca_fit, f"hals_cp_{engine}", spy)
        fit = tca_fit.fit_cp(np.random.default_rng(0).random((6, 5, 8)), rank=2, n_iter_max=3, engine=engine)
        assert fit.engine == engine
        assert seen == [(1, 1)]
        assert (torch.get_num_threads(), numpy_blas_threads()) == (2, 2)
    finally:
        torch.set_num_threads(before[0])
        numpy_blas_threads(before[1])


def test_numpy_and_torch_engines_agree_in_float32():
    x, _ = planted((30, 8, 50), rank=3, seed=2, noise=0.05)
    kw = dict(rank=3, n_iter_max=40, tol=0, rel_tol=0, random_state=0)
    a = tca_fit.fit_cp(x, engine="numpy", **kw)
    b = tca_fit.fit_cp(x, engine="torch", **kw)
    assert len(a.errors) == len(b.errors) == 0  # tol = rel_tol = 0: no error bookkeeping
    for fa, fb in zip(a.factors, b.factors):
        assert np.abs(fa - fb).max() <= 1e-3 * np.abs(fb).max()
    va = tca_metrics.explained_variance(x, a.weights, a.factors)
    vb = tca_metrics.explained_variance(torch.as_tensor(x), b.weights, b.factors)
    assert va.rel_error == pytest.approx(vb.rel_error, rel=1e-4)


def test_auto_engine_choice():
    choose = tca_fit._choose_engine
    small, big = 1000, tca_fit.NUMPY_MAX_ELEMENTS + 1
    assert choose("auto", "CP_NN_HALS", {}, "cpu", "random", 0, small) == "numpy"
    assert choose("auto", "CP_NN_HALS", {}, "cpu", "random", 0, big) == "torch"
    assert choose("auto", "CP_NN_HALS", {}, "cuda", "random", 0, small) == "torch"
    assert choose("auto", "CP_NN_HALS", {}, "cpu", "svd", 0, small) == "torch"
    assert choose("auto", "CP_NN_HALS", {"exact": True}, "cpu", "random", 0, small) == "tensorly"
    assert choose("auto", "CP", {}, "cpu", "random", 0, small) == "tensorly"
    with pytest.raises(TCAError, match="runs on the CPU"):
        choose("numpy", "CP_NN_HALS", {}, "cuda", "random", 0, small)
    with pytest.raises(TCAError, match="init 'random'"):
        choose("numpy", "CP_NN_HALS", {}, "cpu", "svd", 0, small)
    with pytest.raises(TCAError, match="CP_NN_HALS only"):
        choose("numpy", "CP", {}, "cpu", "random", 0, small)


def test_tca_stage_on_the_cpu_never_imports_torch(tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "spectrograms.h5"
    with h5py.File(spec, "w") as f:
        for k, a in spectros(n_points=6, n_freq=5, lengths=(40, 50), seed=1).items():
            f[f"spectrograms/{k}"] = a
        f["frequencies"] = np.linspace(1, 20, 5)
    prog = (
        "import sys, json\n"
        "from facerhythm_core import stages\n"
        "from facerhythm_core.config import validate_config\n"
        "import yaml\n"
        f"schema = yaml.safe_load(open({str(REPO / 'workflow/schemas/config.schema.yaml')!r}))\n"
        "cfg = validate_config({'device': 'auto'}, schema, source='test')\n"
        "p = dict(cfg['tca'], device='auto', rank=2)\n"
        f"stages.tca({str(spec)!r}, {str(tmp_path / 'tca.h5')!r}, session='s', params=p)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == "False"
    with h5py.File(tmp_path / "tca.h5") as f:
        assert {f[f"decompositions/{k}"].attrs["engine"] for k in f["decompositions"]} == {"numpy"}


def test_fit_errors_are_clear():
    x = np.ones((4, 4, 4))
    with pytest.raises(TCAError, match="n_samples"):
        tca_fit.fit_cp(x, method="RandomizedCP", rank=2)
    with pytest.raises(TCAError, match="torch HALS engine does not support"):
        tca_fit.fit_cp(x, rank=2, engine="torch", method_params={"normalize_factors": True})
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(TCAError, match="NaN"):
        tca_fit.fit_cp(bad, rank=2)
    with pytest.raises(TCAError, match="method"):
        tca_fit.fit_cp(x, method="PARAFAC2")
    # unsupported CP_NN_HALS parameters fall back to tensorly under engine auto
    fit = tca_fit.fit_cp(
        np.random.default_rng(0).random((4, 5, 6)), rank=2, n_iter_max=5, method_params={"normalize_factors": True}
    )
    assert fit.engine == "tensorly"


# --- explained variance ----------------------------------------------------------


def reference_evr(x, factors):
    """The reference's definition, written out on a copy of the data."""
    X = x.ravel() - x.mean()
    out = []
    for r in range(factors[0].shape[1]):
        v = np.einsum("i,j,k->ijk", *[f[:, r] for f in factors]).ravel()
        v = v - v.mean()
        a = X @ v / (v @ v)
        out.append(1 - np.var(X - a * v) / np.var(X))
    return np.array(out)


def test_evr_matches_definition_orders_descending_and_leaves_data_alone():
    x, _ = planted((15, 8, 30), rank=4, seed=7, noise=0.1)
    x32 = x.astype(np.float32)
    keep = x32.copy()
    fit = tca_fit.fit_cp(x32, rank=4, n_iter_max=100, random_state=1)
    var = tca_metrics.explained_variance(x32, fit.weights, fit.factors)
    np.testing.assert_array_equal(x32, keep)  # reference bug 12: data centred in place
    np.testing.assert_allclose(var.evr, reference_evr(x32.astype(float), fit.factors), rtol=1e-6, atol=1e-9)
    recon = np.einsum("ir,jr,kr->ijk", *fit.factors)
    resid = x32 - recon
    assert var.evr_model == pytest.approx(1 - resid.var() / x32.var(), rel=1e-6)
    assert var.rel_error == pytest.approx(np.linalg.norm(resid) / np.linalg.norm(x32), rel=1e-6)
    ordered, evr, order = tca_metrics.order_by_evr(fit, var.evr)
    assert np.all(np.diff(evr) <= 0)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    np.testing.assert_array_equal(ordered.factors[1], fit.factors[1][:, order])
    assert np.all((evr >= 0) & (evr <= 1))
    # components overlap, so their EVRs need not add to the model's, but each is below it
    assert evr[0] <= var.evr_model + 1e-9
    # weights are per component and cannot change a squared correlation
    w = np.array([2.0, 0.5, 3.0, 1.0])
    scaled = tca_metrics.explained_variance(x32, w, [f / w ** (1 / 3) for f in fit.factors])
    np.testing.assert_allclose(scaled.evr, var.evr, rtol=1e-6)
    assert scaled.evr_model == pytest.approx(var.evr_model, rel=1e-6)


# --- rearrangement ---------------------------------------------------------------


def test_rearrange_modes_give_documented_shapes():
    data = spectros(n_points=5, n_freq=4, lengths=(20, 30))
    sep = tca_tensor.rearrange_data(data, videos="separate")
    assert {k: v.shape for k, v in sep.tensors.items()} == {"0": (10, 4, 20), "1": (10, 4, 30)}
    # (xy points): x rows first, then y rows
    np.testing.assert_array_equal(sep.tensors["1"][:5], data["1"][0])
    np.testing.assert_array_equal(sep.tensors["1"][5:], data["1"][1])
    cat = tca_tensor.rearrange_data(data, videos="concatenate")
    assert cat.tensors["all"].shape == (10, 4, 50)
    np.testing.assert_array_equal(cat.tensors["all"][..., 20:], sep.tensors["1"])
    with pytest.raises(TCAError, match="equal time lengths"):
        tca_tensor.rearrange_data(data, videos="stack")
    st = tca_tensor.rearrange_data(data, videos="stack", windows={"0": (0, 19), "1": (5, 24)})
    assert st.tensors["all"].shape == (2, 10, 4, 20)
    assert st.layouts["all"].dims == ("video", "(xy points)", "frequency", "time")
    np.testing.assert_array_equal(st.tensors["all"][1, :5], data["1"][0][..., 5:25])
    with pytest.raises(TCAError, match="outside"):
        tca_tensor.rearrange_data(data, windows={"0": (0, 20)})
    with pytest.raises(TCAError, match="complex"):
        tca_tensor.rearrange_data(spectros(complex_=True))


def test_complex_unfold_interleaves_and_is_undone():
    data = spectros(lengths=(6, 4), complex_=True)
    re = tca_tensor.rearrange_data(data, videos="concatenate", complex_unfold=True)
    t = re.tensors["all"]
    assert t.shape == (10, 4, 20)
    a = data["0"].reshape(10, 4, 6)
    np.testing.assert_array_equal(t[..., 0:12:2], a.real)
    np.testing.assert_array_equal(t[..., 1:12:2], a.imag)
    # a "factor" made of time rows comes back complex per video
    rows = t[3, 2][:, None].astype(np.float32)
    facs = [np.ones((10, 1)), np.ones((4, 1)), rows]
    out = tca_tensor.unrearrange_factors(facs, re.layouts["all"])
    np.testing.assert_allclose(out["time"]["1"][:, 0], data["1"].reshape(10, 4, 4)[3, 2])
    assert out["time"]["0"].shape == (6, 1)


def test_unrearranged_factors_have_original_axis_lengths():
    data = spectros(n_points=6, n_freq=5, lengths=(25, 35), seed=2)
    common = dict(rank=3, n_iter_max=15, random_state=0)
    sep = tca.decompose(data, videos="separate", **common)
    assert list(sep.decompositions) == ["0", "1"]
    for k, T in (("0", 25), ("1", 35)):
        f = sep.decompositions[k].factors
        assert f["points_x"].shape == f["points_y"].shape == (6, 3)
        assert f["frequency"].shape == (5, 3)
        assert f["time"].shape == (T, 3)
        assert np.all(np.diff(sep.decompositions[k].evr) <= 0)
    cat = tca.decompose(data, videos="concatenate", **common)
    d = cat.decompositions["all"]
    assert {k: v.shape for k, v in d.factors["time"].items()} == {"0": (25, 3), "1": (35, 3)}
    # the split time factor is exactly the fitted one, cut at the video boundary
    np.testing.assert_array_equal(d.factors["time"]["1"], d.fit.factors[2][25:])
    np.testing.assert_array_equal(d.factors["points_y"], d.fit.factors[0][6:])
    st = tca.decompose(data, videos="stack", windows=(0, 24), **common)
    f = st.decompositions["all"].factors
    assert f["video"].shape == (2, 3) and f["time"].shape == (25, 3)


# --- normalization ---------------------------------------------------------------


def test_normalize_uses_epsilon_and_never_modifies_input():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 50)).astype(np.float32) * 7
    x[1, 2] = 3.0  # a constant fibre: the reference gives inf/NaN here
    keep = x.copy()
    dims = ("(xy points)", "frequency", "time")
    y, info = tca_tensor.normalize_tensor(x, dims, std_divide=True, dim="time", epsilon=1e-6)
    np.testing.assert_array_equal(x, keep)
    assert np.isfinite(y).all() and y.dtype == np.float32
    assert info["n_constant_fibres"] == 1
    std = y.std(axis=2, ddof=1)
    std[1, 2] = 1
    np.testing.assert_allclose(std, 1, rtol=1e-4)
    z, _ = tca_tensor.normalize_tensor(x, dims, mean_subtract=True, std_divide=True, dim="frequency")
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)
    same, _ = tca_tensor.normalize_tensor(x, dims)
    assert same is x
    with pytest.raises(TCAError, match="not an axis"):
        tca_tensor.normalize_tensor(x, dims, std_divide=True, dim="session")


def _normalize_whole(x, ax, mean_subtract, std_divide, epsilon):
    """The normalization on the whole tensor at once in float64 (the former code)."""
    x64 = x.astype(np.float64)
    std = x64.std(axis=ax, ddof=1, keepdims=True)
    if mean_subtract:
        x64 -= x64.mean(axis=ax, keepdims=True)
    if std_divide:
        x64 /= std + epsilon
    return x64.astype(x.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_blockwise_and_in_place_give_the_same_bytes(dtype):
    rng = np.random.default_rng(1)
    dims4 = ("video", "(xy points)", "frequency", "time")
    for shape, dims in (((9, 5, 37), dims4[1:]), ((3, 8, 4, 29), dims4)):
        x = (rng.random(shape) * 9).astype(dtype)
        for ax, dim in enumerate(dims):
            for ms, sd in ((True, False), (False, True), (True, True)):
                want = _normalize_whole(x, ax, ms, sd, 1e-8)
                for block in (1, 300, 64 << 20):  # one index per block ... whole tensor
                    y, _ = tca_tensor.normalize_tensor(x, dims, ms, sd, dim, 1e-8, block_bytes=block)
                    np.testing.assert_array_equal(y, want)
                    z = x.copy()
                    y2, _ = tca_tensor.normalize_tensor(z, dims, ms, sd, dim, 1e-8, out=z, block_bytes=block)
                    assert y2 is z
                    np.testing.assert_array_equal(z, want)
    with pytest.raises(TCAError, match="out must be"):
        tca_tensor.normalize_tensor(x, dims, std_divide=True, out=np.empty(3, dtype))


def test_decompose_overwrites_its_input_only_when_allowed():
    data = spectros(lengths=(30, 30), seed=5)
    keep = {k: v.copy() for k, v in data.items()}
    kw = dict(rank=2, n_iter_max=5, random_state=0)
    a = tca.decompose(data, **kw)
    for k in data:
        np.testing.assert_array_equal(data[k], keep[k])
    b = tca.decompose(data, overwrite_input=True, **kw)
    assert not np.array_equal(data["0"], keep["0"])  # normalized in place
    for name in a.decompositions:
        for fa, fb in zip(a.decompositions[name].fit.factors, b.decompositions[name].fit.factors):
            np.testing.assert_array_equal(fa, fb)
    # concatenate copies anyway: the input stays as it was, even with overwrite_input
    data = {k: v.copy() for k, v in keep.items()}
    tca.decompose(data, videos="concatenate", overwrite_input=True, **kw)
    for k in data:
        np.testing.assert_array_equal(data[k], keep[k])


# --- joint -----------------------------------------------------------------------


def test_joint_needs_one_point_set():
    a = spectros(n_points=5, lengths=(20,))
    b = spectros(n_points=7, lengths=(20,))
    with pytest.raises(TCAError, match="share one point set"):
        tca.decompose_joint({"A": a, "B": b}, rank=2, n_iter_max=5)


def test_joint_concatenate_and_stack():
    a = spectros(n_points=5, lengths=(20, 10), seed=1)
    b = spectros(n_points=5, lengths=(30,), seed=2)
    res = tca.decompose_joint({"A": a, "B": b}, mode="concatenate", rank=2, n_iter_max=10)
    time_f = res.decompositions["all"].factors["time"]
    assert {k: v.shape for k, v in time_f.items()} == {"A/0": (20, 2), "A/1": (10, 2), "B/0": (30, 2)}
    res = tca.decompose_joint({"A": a, "B": b}, mode="stack", rank=2, n_iter_max=10)
    f = res.decompositions["all"].factors
    assert f["session"].shape == (2, 2) and f["time"].shape == (30, 2)


# --- files, sweep, script --------------------------------------------------------


def test_rank_sweep_and_h5_round_trip(tmp_path):
    x, _ = planted((10, 6, 30), rank=2, seed=5, noise=0.01)
    data = {"0": x.reshape(2, 5, 6, 30).astype(np.float32)}
    res = tca.decompose(data, rank=2, n_iter_max=40, rank_sweep_ranks=[1, 2], rank_sweep_seeds=[0, 1])
    sw = res.decompositions["0"].sweep
    assert sw["rel_error"].shape == sw["similarity"].shape == (2, 2)
    assert sw["rel_error"][0].min() > sw["rel_error"][1].min()  # rank 1 fits worse
    assert np.all(np.nanmax(sw["similarity"], axis=1) == pytest.approx(1.0))
    path = tmp_path / "tca.h5"
    with h5py.File(path, "w") as f:
        tca.write_tca_h5(f, res, frequencies=np.arange(6.0), times={"0": np.arange(30) / 6})
    back = tca.read_tca_h5(path)
    d = back["0"]
    np.testing.assert_allclose(d["factors"]["time"], res.decompositions["0"].factors["time"], rtol=1e-6)
    assert d["factors"]["points_x"].shape == (5, 2)
    np.testing.assert_allclose(d["evr"], res.decompositions["0"].evr)
    assert d["rank_sweep"]["rel_error"].shape == (2, 2)
    assert d["times"]["0"].shape == (30,)


def test_factor_match_score_is_one_for_a_permuted_copy_only():
    rng = np.random.default_rng(0)
    fac = [rng.random((n, 3)) for n in (5, 6, 7)]
    perm = [2, 0, 1]
    # rescaling the axes without changing the model (2 * 0.5 * 1) keeps the score at 1
    scaled = [f[:, perm] * c for f, c in zip(fac, (2.0, 0.5, 1.0))]
    score, _, p = tca_metrics.factor_match_score(fac, scaled)
    assert score == pytest.approx(1.0)
    assert [perm[i] for i in p] == [0, 1, 2]
    # a model scaled as a whole is penalized through the component norms
    assert tca_metrics.factor_match_score(fac, [f * 2 for f in fac])[0] < 0.2
    other = [rng.random((n, 3)) for n in (5, 6, 7)]
    assert tca_metrics.factor_match_score(fac, other)[0] < 0.9


def write_spectrograms(path, data, n_freq):
    with h5py.File(path, "w") as f:
        for k, a in data.items():
            f[f"spectrograms/{k}"] = a
            f[f"times/{k}"] = np.arange(a.shape[-1]) / 6.0
        f["frequencies"] = np.geomspace(1, 30, n_freq).astype(np.float32)
        f["point_positions"] = np.zeros((a.shape[1], 2), np.float32)
        f.attrs["fs"] = 120.0


def run_script(name, tmp_path, inputs, params, out, **more_inputs):
    """The rule's stage (facerhythm_core.stages), called as its script calls it."""
    from facerhythm_core import stages

    if name == "tca":
        stages.tca(
            inputs, out, session=params["session"], params=params["tca"], videos_info=more_inputs.get("videos_info")
        )
    else:
        stages.tca_joint(inputs, out, group=params["group"], sessions=params["sessions"], params=params["tca"])


CFG = dict(
    device="cpu",
    method="CP_NN_HALS",
    backend="pytorch",
    rank=2,
    n_iter_max=10,
    init="random",
    tol=1e-9,
    random_state=0,
    method_params={},
    videos="separate",
    mean_subtract=False,
    std_divide=True,
    normalize_dim="time",
    epsilon=1e-8,
    joint={},
    rank_sweep={"enabled": False},
)


def test_tca_stage_writes_documented_file(tmp_path):
    spec = tmp_path / "spectrograms.h5"
    write_spectrograms(spec, spectros(n_points=4, n_freq=3, lengths=(16, 12), seed=3), 3)
    out = tmp_path / "tca.h5"
    info = tmp_path / "videos.json"
    info.write_text(json.dumps({"videos": [{"path": "v/day1.mp4"}, {"path": "v/day2.mp4"}]}))
    run_script("tca", tmp_path, str(spec), {"tca": CFG, "session": "s1"}, out, videos_info=str(info))
    back = tca.read_tca_h5(out)
    assert set(back) == {"0", "1", "frequencies", "point_positions"}
    assert back["1"]["factors"]["time"].shape == (12, 2)
    assert [back[k]["attrs"]["label"] for k in ("0", "1")] == ["day1.mp4", "day2.mp4"]  # by file
    with h5py.File(out, "r") as f:
        assert f.attrs["session"] == "s1"
        assert "provenance" in f


def test_tca_joint_stage_splits_time_per_session(tmp_path):
    paths = []
    for sid, lengths in (("A", (16, 12)), ("B", (20,))):
        p = tmp_path / f"{sid}.h5"
        write_spectrograms(p, spectros(n_points=4, n_freq=3, lengths=lengths), 3)
        paths.append(str(p))
    out = tmp_path / "joint.h5"
    run_script("tca_joint", tmp_path, paths, {"tca": CFG, "group": "g", "sessions": ["A", "B"]}, out)
    back = tca.read_tca_h5(out)
    t = back["all"]["factors"]["time"]
    assert {s: {k: v.shape for k, v in d.items()} for s, d in t.items()} == {
        "A": {"0": (16, 2), "1": (12, 2)},
        "B": {"0": (20, 2)},
    }
    split = back["all"]["time_split"]
    assert split["start"].tolist() == [0, 16, 28] and split["stop"].tolist() == [16, 28, 48]
    assert [s.decode() for s in split["session"]] == ["A", "A", "B"]
    # a session with another point set is refused with a clear message
    write_spectrograms(tmp_path / "C.h5", spectros(n_points=6, n_freq=3, lengths=(20,)), 3)
    with pytest.raises(TCAError, match="share one point set"):
        run_script(
            "tca_joint",
            tmp_path,
            [paths[0], str(tmp_path / "C.h5")],
            {"tca": CFG, "group": "g", "sessions": ["A", "C"]},
            tmp_path / "x.h5",
        )
    assert not (tmp_path / "x.h5").exists()


def test_rank_larger_than_an_axis_is_a_clear_error():
    from facerhythm_core.errors import TCAError
    from facerhythm_core.tca_fit import fit_cp

    x = np.random.default_rng(0).random((20, 6, 4)).astype(np.float32)
    with pytest.raises(TCAError, match=r"rank 5 is larger than axis 2 of the tensor \(20, 6, 4\)"):
        fit_cp(x, rank=5, n_iter_max=2)
    fit = fit_cp(x, rank=4, n_iter_max=2)
    assert fit.factors[2].shape == (4, 4)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_tracked_error_follows_the_exact_error(engine):
    # near a good fit ||X||^2 + ||X_hat||^2 - 2<X, X_hat> cancels: float32 Grams made the
    # tracked error 1.4e-4 off (relative) here, enough to fake an increase and stop the
    # rel_tol rule early; float64 Grams keep it at 3e-5
    rng = np.random.default_rng(0)
    fac = [rng.random((n, 4)) ** 4 for n in (300, 30, 60)]
    x = np.einsum("ir,jr,kr->ijk", *fac)
    x = (x + 0.1 * x.std() * rng.random(x.shape)).astype(np.float32)
    x64 = x.astype(np.float64)
    fs = [f.astype(np.float32) for f in hals.initial_factors_numpy(x.shape, 4, 0)]
    step = hals.hals_cp_numpy if engine == "numpy" else hals.hals_cp_torch
    if engine == "torch":
        fs = [torch.as_tensor(f) for f in fs]
        x_in = torch.as_tensor(x)
    else:
        x_in = x
    devs = []
    for _ in range(40):
        fs, e = step(x_in, fs, n_iter_max=1, tol=1e-30)
        model = np.einsum("ir,jr,kr->ijk", *[np.asarray(f, dtype=np.float64) for f in fs])
        exact = np.linalg.norm(x64 - model) / np.linalg.norm(x64)
        devs.append(abs(e[-1] - exact) / exact)
    assert exact < 0.05  # a good fit: where the cancellation bites
    assert max(devs) < 7e-5, max(devs)


def test_explained_variance_sums_on_a_torch_device_equal_the_numpy_ones():
    # the sums a GPU job makes, run here on torch's CPU device
    rng = np.random.default_rng(1)
    x = rng.random((20, 6, 30))
    f = [rng.random((n, 3)) for n in x.shape]
    w = rng.random(3)
    kr = hals.khatri_rao(f[:-1])
    on_torch = tca_metrics._chunk_sums_torch(torch.as_tensor(x), x.shape, kr, f[-1], w, 7, "cpu")
    on_numpy = tca_metrics._chunk_sums_numpy(x.reshape(-1, 30), kr, f[-1], w, 7)
    np.testing.assert_allclose(on_torch[0], on_numpy[0], rtol=1e-12)
    np.testing.assert_allclose(on_torch[1:], on_numpy[1:], rtol=1e-12)
