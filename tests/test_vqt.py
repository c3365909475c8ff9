"""Tests of the VQT filter bank and transform (facerhythm_core.vqt).

``slow_reference_vqt`` below restates the reference algorithm (shared/reference/algorithms.md 7.1-7.2)
directly: a full-rate ``np.convolve`` per filter, the 'valid'/'same' crop, magnitude,
then average pooling with ``ceil_mode`` (last block = mean of what is left). The fast
implementation is compared with it on tiny inputs.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from facerhythm_core.device import select_device
from facerhythm_core.errors import ConfigError, SpectrogramError
from facerhythm_core.vqt import output_length, plan_vqt, time_axis, vqt
from facerhythm_core.vqt_filters import default_win_size, make_vqt_filters


def slow_reference_vqt(x, filters, ds, padding="valid", take_abs=True, pooling="mean"):
    """Direct restatement of vqt.VQT.forward: (C, S) -> (C, F, T')."""
    C, S = x.shape
    F, W = filters.shape
    out = []
    for c in range(C):
        rows = []
        for f in range(F):
            y = np.convolve(x[c].astype(np.float64), filters[f].astype(np.complex128), mode="full")
            if padding == "valid":
                y = y[W - 1 : S]
            else:
                s0 = math.ceil((W - 1) / 2)
                y = y[s0 : s0 + S]
            blocks = [y[i : i + ds] for i in range(0, len(y), ds)]
            if take_abs:
                rows.append([np.abs(b).mean() for b in blocks])
            elif pooling == "polar":  # the reference: magnitude and raw angle pooled apart
                rows.append([np.abs(b).mean() * np.exp(1j * np.angle(b).mean()) for b in blocks])
            else:
                rows.append([b.mean() for b in blocks])
        out.append(rows)
    return np.asarray(out)


@pytest.fixture(scope="module")
def bank120():
    # the reference's pipeline defaults, but f_max below Nyquist
    return make_vqt_filters(fs=120.0, q_low_f=4.0, q_high_f=10.0, f_min=1.0, f_max=54.0, n_freq_bins=36)


@pytest.fixture(scope="module")
def small_bank():
    # a small bank (W = 61) so the slow reference stays fast
    return make_vqt_filters(fs=60.0, q_low_f=3.0, q_high_f=6.0, f_min=3.0, f_max=25.0, n_freq_bins=9)


def _signals(n_ch, S, fs, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(S) / fs
    x = np.cumsum(rng.standard_normal((n_ch, S)), axis=1) * 0.05 + 2.0  # drift + offset
    x += 0.3 * rng.standard_normal((n_ch, S))
    x[0] += np.sin(2 * np.pi * 7.0 * t)
    x[-1] = rng.standard_normal(S)  # white noise
    return x.astype(np.float32)


# ----------------------------------------------------------------------- filter bank


def test_default_window_rule():
    assert default_win_size(4.0, 120.0, 1.0) == 481  # shared/reference/algorithms.md 7.1
    assert default_win_size(4.0, 100.0, 1.0) == 401  # 400 is even -> 401
    assert default_win_size(0.01, 10.0, 5.0) == 3  # minimum 3


def test_filter_bank_matches_reference_geometry():
    with pytest.warns(UserWarning, match="Nyquist"):
        bank = make_vqt_filters(fs=120.0, f_max=60.0, carrier_fix=False)  # pipeline defaults
    assert bank.filters.shape == (36, 481) and bank.filters.dtype == np.complex64
    assert bank.wins.dtype == np.float32 and bank.freqs.dtype == np.float32
    np.testing.assert_allclose(bank.freqs[[0, -1]], [1.0, 60.0], rtol=1e-6)
    np.testing.assert_allclose(np.diff(np.log(bank.freqs)), np.log(60) / 35, rtol=1e-4)
    # unit L1 norm
    np.testing.assert_allclose(np.abs(bank.filters.astype(np.complex128)).sum(1), 1.0, rtol=1e-5)
    # nonzero hann widths measured on the reference (shared/reference/algorithms.md 7.1)
    widths = (bank.wins > 0).sum(1)
    assert list(widths[:3]) == [479, 437, 399]
    assert list(widths[-3:]) == [23, 21, 19]
    # windows are centred in the W-frame
    np.testing.assert_allclose(bank.wins, bank.wins[:, ::-1], atol=1e-6)


def test_carrier_fix_frequency():
    kw = dict(fs=120.0, f_min=1.0, f_max=54.0, n_freq_bins=36)
    fixed = make_vqt_filters(carrier_fix=True, **kw)
    buggy = make_vqt_filters(carrier_fix=False, **kw)
    W = fixed.win_size
    c = (W - 1) // 2
    for k in (5, 20, 30):
        # instantaneous frequency of the analytic filter at its centre
        f_fix = np.angle(fixed.filters[k, c + 1] / fixed.filters[k, c]) * 120.0 / (2 * np.pi)
        f_bug = np.angle(buggy.filters[k, c + 1] / buggy.filters[k, c]) * 120.0 / (2 * np.pi)
        assert f_fix == pytest.approx(fixed.freqs[k], rel=2e-4)
        assert f_bug == pytest.approx(buggy.freqs[k] * W / (W - 1), rel=2e-4)


def test_window_options():
    g = make_vqt_filters(fs=100.0, f_min=2.0, f_max=40.0, n_freq_bins=5, window_type="gaussian")
    assert np.all(np.isfinite(g.filters))
    left = make_vqt_filters(fs=100.0, f_min=2.0, f_max=40.0, n_freq_bins=5, symmetry="left")
    W = left.win_size
    assert np.all(left.wins[:, W // 2 + 1 :] == 0) and np.any(left.wins[:, : W // 2] > 0)
    full = make_vqt_filters(fs=100.0, f_min=2.0, f_max=40.0, n_freq_bins=5, symmetry="left", taper_asymmetric=False)
    np.testing.assert_allclose(left.wins[:, W // 2], 0.5 * full.wins[:, W // 2], rtol=1e-6)
    with pytest.raises(ConfigError, match="window_type"):
        make_vqt_filters(fs=100.0, f_min=2.0, f_max=40.0, window_type="no-such-window")


def test_nyquist_checks():
    with pytest.raises(ConfigError, match="Nyquist"):
        make_vqt_filters(fs=100.0, f_min=1.0, f_max=51.0)
    with pytest.raises(ConfigError, match="f_min < f_max"):
        make_vqt_filters(fs=100.0, f_min=10.0, f_max=5.0)


# ----------------------------------------------------------------------- transform


@pytest.mark.parametrize("engine", ["direct", "fft", "numpy", "numba"])
@pytest.mark.parametrize("carrier_fix", [True, False])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_exact_matches_slow_reference(carrier_fix, padding, engine):
    bank = make_vqt_filters(
        fs=60.0, q_low_f=3.0, q_high_f=6.0, f_min=3.0, f_max=25.0, n_freq_bins=9, carrier_fix=carrier_fix
    )
    x = _signals(3, 407, 60.0)
    ref = slow_reference_vqt(x, bank.filters, 7, padding)
    out = vqt(x, bank, 7, padding=padding, engine=engine)
    assert out.shape == ref.shape == (3, 9, output_length(407, bank.win_size, 7, padding))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_complex_output_matches_slow_reference(small_bank):
    x = _signals(2, 300, 60.0, seed=1)
    ref = slow_reference_vqt(x, small_bank.filters, 5, take_abs=False)
    out = vqt(x, small_bank, 5, take_abs=False)
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    ref_polar = slow_reference_vqt(x, small_bank.filters, 5, take_abs=False, pooling="polar")
    out = vqt(x, small_bank, 5, take_abs=False, complex_pooling="polar")
    np.testing.assert_allclose(out, ref_polar, rtol=0, atol=1e-5 * np.abs(ref_polar).max())


def test_engines_agree_on_long_signal(bank120):
    # several FFT blocks, with the partial last bin; 'direct' is the time-domain sum
    x = _signals(3, 30013, 120.0, seed=2)
    a = plan_vqt(bank120, 30013, 20, engine="fft")
    b = plan_vqt(bank120, 30013, 20, engine="direct")
    assert a.engine == "fft" and b.engine == "direct"
    assert 30013 > 3 * a.fft_size
    oa, ob = a.transform(x).numpy(), b.transform(x).numpy()
    np.testing.assert_allclose(oa, ob, rtol=0, atol=1e-5 * np.abs(ob).max())
    oc = plan_vqt(bank120, 30013, 20, engine="numba").transform_array(x)
    np.testing.assert_allclose(oc, ob, rtol=0, atol=1e-5 * np.abs(ob).max())
    # and both against the slow restatement on a stretch from the middle and the end
    ref = slow_reference_vqt(x[:1], bank120.filters, 20)
    np.testing.assert_allclose(oa[:1], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_sinusoid_peaks_in_nearest_bin_with_expected_amplitude(bank120):
    fs, S, A = 120.0, 3000, 2.0
    n = np.arange(S)
    for f0 in (bank120.freqs[12], bank120.freqs[25], 9.3):
        x = (A * np.cos(2 * np.pi * f0 * n / fs))[None].astype(np.float32)
        out = vqt(x, bank120, 20)[0]  # (F, T')
        prof = out[:, 2:-2].mean(1)
        nearest = np.argmin(np.abs(np.log(bank120.freqs) - np.log(f0)))
        assert np.argmax(prof) == nearest
        # |y| = A/2 |H(w0) e^{iw0 n} + H(-w0) e^{-iw0 n}|, H the filter's DTFT
        h = bank120.filters[nearest].astype(np.complex128)
        k = np.arange(h.size)
        Hp = abs(np.sum(h * np.exp(-2j * np.pi * f0 / fs * k)))
        Hm = abs(np.sum(h * np.exp(2j * np.pi * f0 / fs * k)))
        assert abs(prof[nearest] - A / 2 * Hp) <= A / 2 * Hm + 1e-3 * A
        if f0 == bank120.freqs[12]:  # on a bin centre the unit-L1 filter has gain ~1
            assert prof[nearest] == pytest.approx(A / 2, rel=0.03)


def test_valid_length_and_time_axis():
    # reference numbers (shared/reference/algorithms.md 7.2): W=481, ds=20
    assert output_length(1000, 481, 20) == 26
    assert output_length(2000, 481, 20) == 76
    x = time_axis(1000, 481, 20)
    assert x.shape == (26,)
    assert x[0] == 249.5 and x[1] == 269.5
    S, W, ds = 1000, 481, 20
    L = S - W + 1
    m = np.arange(L // ds)
    np.testing.assert_allclose(x[: L // ds], (W - 1) / 2 + m * ds + (ds - 1) / 2)
    # last partial block (S = 1013: 533 samples = 26 blocks + 13): mean of its centres
    x2 = time_axis(1013, W, ds)
    assert x2.shape == (27,) and output_length(1013, W, ds) == 27
    assert x2[-1] == pytest.approx((W - 1) / 2 + 26 * ds + (13 - 1) / 2)
    assert output_length(1000, 481, 20, "same") == 50
    xs = time_axis(1000, 481, 20, "same")
    assert xs[0] == pytest.approx(9.5)  # odd W, 'same': sample m labelled m


def test_too_short_signal_fails_clearly(bank120):
    with pytest.raises(SpectrogramError, match=r"session s1, video 2.*400 frames.*481"):
        plan_vqt(bank120, 400, 20, label="session s1, video 2")
    # 'same' padding works on a short signal
    out = vqt(np.ones((1, 400), np.float32), bank120, 20, padding="same")
    assert out.shape == (1, 36, 20)


@pytest.mark.parametrize("engine", ["direct", "fft", "numpy"])
def test_batching_does_not_change_results(small_bank, engine):
    x = _signals(5, 1600, 60.0, seed=3)
    big = plan_vqt(small_bank, 1600, 6, engine=engine).transform(x).numpy()
    tiny = plan_vqt(small_bank, 1600, 6, engine=engine, max_batch_bytes=1).transform(x).numpy()
    np.testing.assert_allclose(tiny, big, rtol=1e-5, atol=1e-6 * np.abs(big).max())
    with pytest.raises(ConfigError, match="engine"):
        plan_vqt(small_bank, 1600, 6, take_abs=False, engine="fft")


def test_device_selection_falls_back(small_bank):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dev = select_device("cuda")
    assert dev == ("cuda" if torch.cuda.is_available() else "cpu")
    x = _signals(2, 300, 60.0, seed=4)
    a = vqt(x, small_bank, 5, device="cpu")
    b = vqt(x, small_bank, 5, device=dev)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    assert select_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError):
        select_device("tpu")


# ----------------------------------------------------------------------- baseband engine
# The opt-in 'baseband' engine is approximate; its stated tolerance (docs/spectrogram.md)
# is checked here against the exact 'fft' engine: max error / row max (all bins, times).
BASEBAND_TOL = 2e-2  # defaults band_eps=1e-5, band_oversample=1 (measured <= 7.7e-3)
BASEBAND_FINE_TOL = 2e-3  # band_eps=1e-5, band_oversample=4 (measured <= 6.5e-4)


def _mixed_signals(S, fs=120.0, seed=5):
    """Drift + noise + rhythm rows, a white-noise row and a chirp: the error's worst cases."""
    rng = np.random.default_rng(seed)
    t = np.arange(S) / fs
    x = np.cumsum(rng.standard_normal((4, S)), axis=1) * 0.05 + 0.3 * rng.standard_normal((4, S))
    x[0] += np.sin(2 * np.pi * 7.0 * t)
    x[1] = rng.standard_normal(S)
    x[2] = np.sin(2 * np.pi * (1.0 + 2.0 * t / t[-1]) * 4.0 * t)
    return x.astype(np.float32)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_baseband_engine_within_stated_tolerance(bank120, padding):
    S = 9013  # several blocks + partial bin
    x = _mixed_signals(S)
    exact = plan_vqt(bank120, S, 20, padding=padding, engine="fft").transform(x).numpy()
    fast = plan_vqt(bank120, S, 20, padding=padding, engine="baseband")
    assert fast.engine == "baseband"
    assert max(d for _, d, _, _ in fast.band_groups) > 1  # some filters are decimated
    out = fast.transform(x).numpy()
    assert out.shape == exact.shape
    err = np.abs(out - exact) / np.abs(exact).max(axis=(1, 2), keepdims=True)
    assert err.max() < BASEBAND_TOL
    # more oversampling and a lower crop threshold only make it better
    fine = (
        plan_vqt(bank120, S, 20, padding=padding, engine="baseband", band_eps=1e-5, band_oversample=4.0)
        .transform(x)
        .numpy()
    )
    err_fine = np.abs(fine - exact) / np.abs(exact).max(axis=(1, 2), keepdims=True)
    assert err_fine.max() < min(err.max(), BASEBAND_FINE_TOL)


def test_baseband_engine_tracks_a_modulated_rhythm(bank120):
    # slow envelope on a 5 Hz carrier: a time offset or scale error in the decimated
    # bookkeeping would show on the bins that carry the rhythm
    fs, S = 120.0, 6000
    t = np.arange(S) / fs
    x = ((1 + 0.8 * np.sin(2 * np.pi * 0.2 * t)) * np.cos(2 * np.pi * 5.0 * t))[None].astype(np.float32)
    exact = vqt(x, bank120, 20, engine="fft")[0]
    plan = plan_vqt(bank120, S, 20, engine="baseband")
    out = plan.transform(x).numpy()[0]
    strong = exact.max(axis=1) > 0.1 * exact.max()
    decimation = {int(k): d for ks, d, _, _ in plan.band_groups for k in ks}
    assert any(decimation[k] >= 4 for k in np.nonzero(strong)[0])
    np.testing.assert_allclose(out[strong], exact[strong], rtol=0, atol=2e-3 * exact.max())


def test_baseband_engine_options(small_bank):
    x = _signals(5, 1600, 60.0, seed=3)
    big = plan_vqt(small_bank, 1600, 6, engine="baseband").transform(x).numpy()
    tiny = plan_vqt(small_bank, 1600, 6, engine="baseband", max_batch_bytes=1).transform(x).numpy()
    np.testing.assert_allclose(tiny, big, rtol=1e-5, atol=1e-6 * np.abs(big).max())
    with pytest.raises(ConfigError, match="magnitude"):
        plan_vqt(small_bank, 1600, 6, take_abs=False, engine="baseband")
    with pytest.raises(ConfigError, match="band_eps"):
        plan_vqt(small_bank, 1600, 6, engine="baseband", band_eps=0.0)
    with pytest.raises(ConfigError, match="band_oversample"):
        plan_vqt(small_bank, 1600, 6, engine="baseband", band_oversample=0.5)


# ----------------------------------------------------------------------- scipy-free helpers


def test_hann_windows_equal_the_references_cubic_spline():
    # the reference: interp1d(cubic) through a 10000-sample scipy hann, at x * W / scale
    import scipy.interpolate
    import scipy.signal

    bank = make_vqt_filters(fs=90.0, f_max=40.5)
    W = bank.win_size
    mother = scipy.signal.windows.hann(10000, sym=True)
    xm = np.linspace(0, 1, 10000) - 0.5
    f = scipy.interpolate.interp1d(xm, mother, kind="cubic", fill_value=0, bounds_error=False)
    qs = np.geomspace(4.0, 10.0, 36, dtype=np.float32)
    scales = np.clip(qs * (np.float32(90.0) * (np.float32(1) / bank.freqs)), 1, None).astype(int)
    grid = np.linspace(0, 1, W) - 0.5
    ref = np.stack([f(grid * (W / s)) for s in scales]).astype(np.float32)
    np.testing.assert_allclose(bank.wins, ref, rtol=0, atol=6e-8)


def test_numpy_hilbert_and_fast_len_match_scipy():
    import scipy.fft
    import scipy.signal

    from facerhythm_core.vqt import _next_fast_len
    from facerhythm_core.vqt_filters import _hilbert

    x = np.random.default_rng(0).standard_normal((3, 101))
    for n in (101, 100):
        np.testing.assert_allclose(_hilbert(x[:, :n]), scipy.signal.hilbert(x[:, :n], axis=1), atol=1e-12)
    for n in list(range(1, 300)) + [3369, 4801, 65537]:
        assert _next_fast_len(n) == scipy.fft.next_fast_len(n, real=True)
        assert _next_fast_len(n, (2, 3, 5, 7, 11)) == scipy.fft.next_fast_len(n)


def test_fft_engine_default_batch_equals_tiny_and_huge_batches(bank120):
    x = _signals(5, 3000, 120.0, seed=4)
    default = plan_vqt(bank120, 3000, 20, engine="fft").transform(x).numpy()
    for mb in (1, 2**31):
        other = plan_vqt(bank120, 3000, 20, engine="fft", max_batch_bytes=mb).transform(x).numpy()
        np.testing.assert_allclose(other, default, rtol=1e-6, atol=1e-7 * default.max())


def test_fft_size_is_a_power_of_two_with_least_modelled_work(bank120):
    from facerhythm_core.vqt import _overlap_save_size

    W, ds = bank120.win_size, 20
    # a 1000-frame trial (26 output bins) fits one 1024-point block, not a slow 1080
    trial = plan_vqt(bank120, 1000, ds, engine="fft")
    assert (trial.fft_size, trial.n_full) == (1024, 26) and trial.fft_blocks >= 26
    # long signals: 4096-point blocks (not next_fast_len's 4374 = 2 * 3^7)
    long = plan_vqt(bank120, 120_000, ds, engine="fft")
    assert long.fft_size == 4096 and long.fft_blocks == (4096 - W + 1) // ds
    for n_blocks in (1, 2, 26, 27, 28, 100, 10_000):
        N = _overlap_save_size(W, ds, n_blocks)
        assert N & (N - 1) == 0 and (N - W + 1) // ds >= 1
        # no other power of two up to the cap needs less modelled work
        cost = lambda n: -(-n_blocks // ((n - W + 1) // ds)) * n * np.log2(n)  # noqa: E731
        others = [2**k for k in range(9, 13) if (2**k - W + 1) // ds >= 1]
        assert cost(N) <= min(cost(n) for n in others) + 1e-9


def test_fft_engine_equals_direct_across_block_sizes(bank120):
    # signal lengths whose output needs one block, one block exactly full, and several
    for S in (520, 1000, 1020, 1021, 5000):
        x = _signals(2, S, 120.0, seed=S)
        a = plan_vqt(bank120, S, 20, engine="fft")
        b = plan_vqt(bank120, S, 20, engine="direct")
        oa, ob = a.transform(x).numpy(), b.transform(x).numpy()
        np.testing.assert_allclose(oa, ob, rtol=0, atol=1e-5 * np.abs(ob).max())


# ----------------------------------------------------------------------- host engines


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize(
    "n_samples,padding,rows",
    [
        (1000, "valid", 9),
        (1013, "valid", 9),
        (1000, "same", 9),
        (977, "same", 9),
        (6011, "valid", 9),
        (481, "valid", 9),
        (6011, "valid", 70),  # 'numba': several tiles, a partial one, the partial bin in each
    ],
)
def test_host_engines_equal_torch_engines(bank120, n_samples, padding, rows, engine):
    """The 'numpy' and 'numba' engines give the torch engines' numbers to float32
    rounding, the last, partial bin (1013, 977, 6011 frames) included, and the same
    numbers on 1 or 2 threads."""
    x = _signals(rows, n_samples, 120.0, seed=5)
    plan = plan_vqt(bank120, n_samples, 20, padding=padding, engine=engine, workers=2)
    assert plan.engine == engine and plan.weight is None  # no torch kernels made
    out = plan.transform_array(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    ref = plan_vqt(bank120, n_samples, 20, padding=padding, engine="direct").transform(x).numpy()
    n_out = output_length(n_samples, bank120.win_size, 20, padding)
    assert out.shape == ref.shape == (rows, bank120.n_freq_bins, n_out)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    one = plan_vqt(bank120, n_samples, 20, padding=padding, engine=engine, workers=1).transform_array(x)
    np.testing.assert_array_equal(one, out)
    np.testing.assert_array_equal(plan.transform(x).numpy(), out)  # the torch-facing call


def test_numba_fft_tables_and_odd_power_lengths():
    """Bit reversal and twiddles of the compiled inverse FFT; N = 2^odd ends with a
    radix-2 stage (a signal at fs 60, W = 241, gets N = 512)."""
    from facerhythm_core.vqt_numba import _tile_bin_sums, fft_tables

    rev, twr, twi = fft_tables(8)
    assert rev.tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    np.testing.assert_allclose(twr + 1j * twi, np.exp(2j * np.pi * np.arange(8) / 8), atol=1e-7)
    with pytest.raises(ValueError, match="power-of-two"):
        fft_tables(1000)
    rng = np.random.default_rng(3)
    for N in (8, 16, 32, 512):  # 2^3 and 2^9: a radix-2 stage last
        seg = rng.standard_normal((5, N)).astype(np.float32)
        h = (rng.standard_normal((2, N)) + 1j * rng.standard_normal((2, N))).astype(np.complex64)
        X = np.fft.rfft(seg, axis=-1)
        sums, part = np.empty((2, 1, 5), np.float32), np.empty((2, 5), np.float32)
        rev, twr, twi = fft_tables(N)
        hr, hi = np.ascontiguousarray(h.real / N), np.ascontiguousarray(h.imag / N)
        xr, xi = np.ascontiguousarray(X.real.T), np.ascontiguousarray(X.imag.T)
        _tile_bin_sums(xr, xi, hr, hi, rev, twr, twi, N // 2, 1, 1, 3, sums, part)
        y = np.abs(np.fft.ifft(np.fft.fft(seg, axis=-1)[None] * h[:, None], axis=-1))  # (2, 5, N)
        np.testing.assert_allclose(sums[:, 0], y[..., : N // 2].sum(-1), rtol=2e-5)
        np.testing.assert_allclose(part, y[..., N // 2 : N // 2 + 3].sum(-1), rtol=2e-5)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_host_engine_limits(small_bank, engine):
    with pytest.raises(ConfigError, match="magnitude output only"):
        plan_vqt(small_bank, 1600, 6, take_abs=False, engine=engine)
    with pytest.raises(ConfigError, match="CPU only"):
        plan_vqt(small_bank, 1600, 6, engine=engine, device="cuda")
    plan = plan_vqt(small_bank, 1600, 6, engine=engine)
    with pytest.raises(SpectrogramError, match="C-contiguous float32"):  # a wrong out buffer
        plan.transform_array(np.zeros((2, 1600), np.float32), out=np.zeros((2, small_bank.n_freq_bins, 1), np.float32))
    with pytest.raises(SpectrogramError, match="1600 samples"):
        plan.transform_array(np.zeros((2, 1500), np.float32))
    assert plan.transform_array(np.zeros((0, 1600), np.float32)).shape == (0, small_bank.n_freq_bins, plan.n_out)
