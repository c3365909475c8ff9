"""Tests of the spectral stage (facerhythm_core.spectrogram) on tiny synthetic tracks."""

import logging

import h5py
import numpy as np
import pytest

from facerhythm_core.errors import ConfigError, SpectrogramError
from facerhythm_core.io import read_provenance
from facerhythm_core.spectrogram import (
    SpectrogramParams,
    compute_session_spectrograms,
    displacement_traces,
    frame_power,
    normalize_spectrogram,
    read_spectrograms,
    NUMPY_MAX_SAMPLES,
    resolve_f_max,
    session_engine,
    spectrogram_from_tracks,
)
from facerhythm_core.vqt import output_length, vqt

FS = 60.0
PARAMS = dict(
    fs=None, q_low_f=3.0, q_high_f=6.0, f_min=2.0, f_max=25.0, n_freq_bins=10, downsample_factor=6, device="cpu"
)


def _tracks(T, N, fs=FS, seed=0, f_y=8.0):
    rng = np.random.default_rng(seed)
    home = rng.uniform(20, 200, (N, 2)).astype(np.float32)
    t = np.arange(T) / fs
    pts = home[None] + 0.05 * rng.standard_normal((T, N, 2))
    pts[:, : N // 2, 1] += 1.5 * np.sin(2 * np.pi * f_y * t)[:, None]  # y rhythm, half the points
    return pts.astype(np.float32), home


def _write_tracking(path, videos, home, fs=FS):
    with h5py.File(path, "w") as f:
        f.create_dataset("point_positions", data=home)
        g = f.create_group("points_tracked")
        for i, pts in enumerate(videos):
            g.create_dataset(str(i), data=pts)
        f.attrs["frame_rate"] = fs
        f.attrs["contiguous"] = False
        f.attrs["num_keys"] = len(videos)
        f.create_dataset("video_paths", data=[f"/data/v{i}.mp4" for i in range(len(videos))], dtype=h5py.string_dtype())
        f.create_dataset("num_frames", data=np.array([len(v) for v in videos], dtype=np.int64))


def test_displacement_rows_layout():
    pts = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # T=3, N=2
    home = np.array([[1, 2], [3, 4]], np.float32)
    rows = displacement_traces(pts, home)
    assert rows.shape == (4, 3) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], pts[:, 0, 0] - 1)  # x of point 0
    np.testing.assert_array_equal(rows[1], pts[:, 1, 0] - 3)  # x of point 1
    np.testing.assert_array_equal(rows[2], pts[:, 0, 1] - 2)  # y of point 0
    np.testing.assert_array_equal(rows[3], pts[:, 1, 1] - 4)  # y of point 1
    with pytest.raises(SpectrogramError, match="point_positions"):
        displacement_traces(pts, home[:1])


@pytest.mark.parametrize("alpha,gamma,beta", [(0.95, 1.0, 0.5), (0.0, 2.0, 0.0), (1.0, 0.5, 1.0)])
def test_normalization_matches_formula(alpha, gamma, beta):
    rng = np.random.default_rng(1)
    S = rng.gamma(2.0, 1.0, (6, 4, 9)).astype(np.float32)  # (2N rows, F, T')
    freqs = np.array([1, 2, 4, 8], np.float32)
    m = frame_power(S, gamma) / S.shape[0]
    # direct evaluation, element by element
    expect = np.empty_like(S, dtype=np.float64)
    for t in range(S.shape[2]):
        m_t = np.mean([sum(float(S[r, f, t]) ** gamma for f in range(4)) for r in range(6)])
        for r in range(6):
            for f in range(4):
                expect[r, f, t] = float(S[r, f, t]) ** gamma / (alpha * m_t + 1 - alpha) * float(freqs[f]) ** beta
    got = normalize_spectrogram(S, freqs, m, alpha, gamma, beta)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    if alpha == 1.0 and beta == 0.0:
        np.testing.assert_allclose(frame_power(got, 1.0) / 6, 1.0, rtol=1e-5)


def test_normalization_keeps_phase_of_complex():
    rng = np.random.default_rng(2)
    S = (rng.standard_normal((4, 3, 5)) + 1j * rng.standard_normal((4, 3, 5))).astype(np.complex64)
    freqs = np.array([1.0, 3.0, 9.0])
    m = frame_power(S, 1.0) / 4
    got = normalize_spectrogram(S, freqs, m, 0.9, 1.0, 0.5)
    assert got.dtype == np.complex64
    np.testing.assert_allclose(np.angle(got), np.angle(S), atol=1e-5)
    np.testing.assert_allclose(np.abs(got), normalize_spectrogram(np.abs(S), freqs, m, 0.9, 1.0, 0.5), rtol=1e-5)


def test_f_max_clamped_below_nyquist():
    with pytest.warns(UserWarning, match="clamped"):
        assert resolve_f_max(60.0, 120.0, 0.9) == pytest.approx(54.0)
    assert resolve_f_max(40.0, 120.0, 0.9) == 40.0
    assert resolve_f_max(60.0, 120.0, 1.0) == 60.0  # the reference's setting, allowed


def test_params_reject_unknown_keys():
    with pytest.raises(ConfigError, match="unknown spectrogram"):
        SpectrogramParams.from_mapping({"Fs_sample": 120})
    with pytest.raises(ConfigError, match="normalization_factor"):
        SpectrogramParams.from_mapping({"normalization_factor": 1.5})


def test_in_memory_spectrogram_is_reference_pipeline():
    pts, home = _tracks(400, 6)
    p = SpectrogramParams.from_mapping(PARAMS)
    bank = p.filter_bank(FS)
    spec, x_axis, m = spectrogram_from_tracks(pts, home, bank, p)
    T_out = output_length(400, bank.win_size, 6)
    assert spec.shape == (2, 6, 10, T_out) and x_axis.shape == (T_out,)
    # restate: rows -> VQT -> pooled normalisation -> (2, N, F, T') in C order
    rows = displacement_traces(pts, home)
    raw = vqt(rows, bank, 6, engine="direct")
    e = raw.astype(np.float64)
    m_ref = e.sum(1).mean(0)
    ref = e / (0.95 * m_ref + 0.05) * bank.freqs[:, None].astype(np.float64) ** 0.5
    np.testing.assert_allclose(spec, ref.reshape(2, 6, 10, T_out), rtol=1e-5, atol=1e-6 * ref.max())
    np.testing.assert_allclose(m, m_ref, rtol=1e-6)


def test_rhythm_shows_up_in_y_at_its_frequency():
    pts, home = _tracks(900, 8, f_y=8.0)
    p = SpectrogramParams.from_mapping(PARAMS)
    bank = p.filter_bank(FS)
    spec, _, _ = spectrogram_from_tracks(pts, home, bank, p)
    prof_y = spec[1, :4].mean(axis=(0, 2))
    assert np.argmax(prof_y) == np.argmin(np.abs(np.log(bank.freqs / 8.0)))
    assert spec[1, :4].mean() > 10 * spec[0, :4].mean()  # x did not move


def test_session_file_chunked_equals_in_memory(tmp_path, caplog):
    (a, home), (b, _) = _tracks(500, 7, seed=3), _tracks(420, 7, seed=4)
    b = b - _tracks(420, 7, seed=4)[1] + home  # same home positions
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, [a, b], home)
    out = tmp_path / "spectrograms.h5"
    caplog.set_level(logging.INFO)
    summary = compute_session_spectrograms(trk, out, {**PARAMS, "points_per_chunk": 3, "f_max": 40.0}, session="s9")
    assert summary["f_max"] == pytest.approx(27.0)  # 0.9 x Nyquist at 60 Hz
    assert any("clamped" in r.message for r in caplog.records)
    res = read_spectrograms(out)
    p = SpectrogramParams.from_mapping({**PARAMS, "f_max": 27.0})
    bank = p.filter_bank(FS)
    for key, pts in (("0", a), ("1", b)):
        spec, x_axis, m = spectrogram_from_tracks(pts, home, bank, p)
        np.testing.assert_allclose(res["spectrograms"][key], spec, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(res["x_axis"][key], x_axis)
        np.testing.assert_allclose(res["times"][key], x_axis / FS)
        np.testing.assert_allclose(res["mean_power"][key], m, rtol=1e-6)
    assert res["spectrograms"]["0"].dtype == np.float32
    np.testing.assert_allclose(res["frequencies"], bank.freqs)
    assert res["filters"].dtype == np.complex64 and res["filters"].shape == (10, bank.win_size)
    assert res["wins"].dtype == np.float32
    np.testing.assert_array_equal(res["point_positions"], home)
    assert res["attrs"]["fs"] == FS and res["attrs"]["frame_rate"] == FS
    with h5py.File(out) as f:
        prov = read_provenance(f)
    assert prov["stage"] == "spectrogram" and prov["params"]["fs_used"] == FS


def test_fs_override_and_complex_output(tmp_path):
    pts, home = _tracks(500, 4)
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, [pts], home)
    out = tmp_path / "spec.h5"
    compute_session_spectrograms(trk, out, {**PARAMS, "fs": 50.0, "take_abs": False})
    with h5py.File(out) as f:
        assert f.attrs["fs"] == 50.0 and f.attrs["frame_rate"] == FS
        d = f["spectrograms/0"]
        assert d.dtype == np.complex64 and d.shape[:3] == (2, 4, 10)
        np.testing.assert_allclose(f["times/0"][()], f["x_axis/0"][()] / 50.0)


def test_short_video_fails_before_any_work(tmp_path):
    ok, home = _tracks(500, 4)
    short, _ = _tracks(30, 4)
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, [ok, short], home)
    with pytest.raises(SpectrogramError) as err:
        compute_session_spectrograms(trk, tmp_path / "x.h5", PARAMS, session="mouse7")
    msg = str(err.value)
    W = SpectrogramParams.from_mapping(PARAMS).filter_bank(FS).win_size
    assert "mouse7" in msg and "video 1" in msg and "/data/v1.mp4" in msg
    assert "30 frames" in msg and f"{W} frames" in msg and "Fix" in msg


@pytest.mark.parametrize("extra", [{}, {"take_abs": False}, {"spectrogram_exponent": 2.0, "one_over_f_exponent": 0.0}])
def test_in_memory_and_streaming_paths_write_the_same_file(tmp_path, caplog, extra):
    pts, home = _tracks(480, 5, seed=5)
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, [pts, pts[:400] * 1.5 - 0.5 * home], home)
    cfg = {**PARAMS, "points_per_chunk": 2, **extra}
    caplog.set_level(logging.INFO)
    compute_session_spectrograms(trk, tmp_path / "mem.h5", cfg)
    assert any("in-memory normalisation" in r.message for r in caplog.records)
    caplog.clear()
    compute_session_spectrograms(trk, tmp_path / "stream.h5", cfg, memory_budget=0)
    assert any("streaming (two-pass) normalisation" in r.message for r in caplog.records)
    mem, stream = read_spectrograms(tmp_path / "mem.h5"), read_spectrograms(tmp_path / "stream.h5")
    for name in ("spectrograms", "x_axis", "times", "mean_power"):
        assert sorted(mem[name]) == ["0", "1"]
        for key in mem[name]:
            assert mem[name][key].dtype == stream[name][key].dtype
            np.testing.assert_array_equal(mem[name][key], stream[name][key])
    # and both are the in-memory reference pipeline
    p = SpectrogramParams.from_mapping(cfg)
    spec, _, m = spectrogram_from_tracks(pts, home, p.filter_bank(FS), p)
    np.testing.assert_allclose(mem["spectrograms"]["0"], spec, rtol=2e-5, atol=1e-7 * np.abs(spec).max())
    np.testing.assert_allclose(mem["mean_power"]["0"], m, rtol=1e-6)


def test_normalization_in_place_equals_copy():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 2, (2, 3, 4, 9)).astype(np.float32)
    freqs, m = np.geomspace(1, 20, 4), rng.uniform(0.5, 2, 9)
    ref = normalize_spectrogram(raw, freqs, m)
    buf = raw.copy()
    normalize_spectrogram(buf, freqs, m, out=buf)
    np.testing.assert_array_equal(buf, ref)
    assert ref.dtype == np.float32


def test_chunks_of_points_shrink_for_long_videos():
    """Memory per chunk stays under CHUNK_BUDGET however long the video (an hour at
    90 fps: ~10 MB per point); short videos keep points_per_chunk (same bytes as before)."""
    from facerhythm_core.spectrogram import CHUNK_BUDGET, _chunk_points

    assert _chunk_points(256, 1000, 36, 26, 4) == 256
    assert _chunk_points(256, 21600, 36, 1000, 4) == 256
    for frames in (324000, 432000, 10**7):
        n_out = frames // 20
        k = _chunk_points(256, frames, 36, n_out, 4)
        assert 1 <= k < 256
        assert k == 1 or k * (2 * frames * 2 * 4 + 2 * 36 * n_out * 4) <= CHUNK_BUDGET


def test_videos_of_one_length_share_one_plan(tmp_path, monkeypatch):
    """Trial videos of equal length reuse one VQT plan (filter spectra are made once per
    length, not once per video), and each video still gets its own, correct spectrogram."""
    import facerhythm_core.spectrogram as spectrogram_module

    lengths = []
    real_plan_vqt = spectrogram_module.plan_vqt

    def counting_plan_vqt(bank, n_samples, **kw):
        lengths.append(n_samples)
        return real_plan_vqt(bank, n_samples, **kw)

    monkeypatch.setattr(spectrogram_module, "plan_vqt", counting_plan_vqt)
    (a, home), (b, _), (c, _) = _tracks(500, 4, seed=1), _tracks(420, 4, seed=2), _tracks(500, 4, seed=3)
    videos = [a, b - _tracks(420, 4, seed=2)[1] + home, c - _tracks(500, 4, seed=3)[1] + home]
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, videos, home)
    compute_session_spectrograms(trk, tmp_path / "spec.h5", PARAMS)
    assert sorted(lengths) == [420, 500]
    res = read_spectrograms(tmp_path / "spec.h5")
    p = SpectrogramParams.from_mapping(PARAMS)
    for key, pts in zip("012", videos):
        spec, _, _ = spectrogram_from_tracks(pts, home, p.filter_bank(FS), p)
        np.testing.assert_allclose(res["spectrograms"][key], spec, rtol=2e-5, atol=1e-7 * np.abs(spec).max())


def test_heap_trimmer_returns_freed_heap_only_past_its_slack():
    from facerhythm_core.runtime import HeapTrimmer

    lazy = HeapTrimmer(slack_bytes=2**40)
    if lazy._libc is None:
        pytest.skip("no glibc malloc_trim here")
    lazy.after_video()
    assert lazy.trims == 0  # nothing piled up: no trim, no cost
    trimmer = HeapTrimmer(slack_bytes=32 * 2**20)
    # 128 MB of 32 KB heap blocks, every other one freed: holes the heap cannot shrink past
    blocks = [np.ones(4096) for _ in range(4000)]
    del blocks[::2]
    before = trimmer._rss()
    trimmer.after_video()
    assert trimmer.trims == 1
    assert before - trimmer._rss() > 32 * 2**20  # the holes went back to the OS
    trimmer.after_video()
    assert trimmer.trims == 1  # and the next video finds nothing new to trim
    del blocks


def test_tune_heap_keeps_freed_megabyte_buffers_in_the_heap():
    import subprocess
    import sys

    # a fresh interpreter each: glibc's thresholds are per process
    prog = (
        "import numpy as np\n"
        "from facerhythm_core.runtime import tune_heap\n"
        "ok = tune_heap() if {tune} else True\n"
        "import os\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page\n"
        "a = np.ones(2**20)  # 8 MB: mmapped by default, a heap block once tuned\n"
        "before = rss()\n"
        "del a\n"
        "print(ok, before - rss())\n"
    )
    freed = {}
    for tune in (False, True):
        out = subprocess.run(
            [sys.executable, "-c", prog.format(tune=tune)], capture_output=True, text=True, check=True
        ).stdout.split()
        if out[0] != "True":
            pytest.skip("no glibc mallopt here")
        freed[tune] = int(out[1])
    assert freed[False] > 7 * 2**20  # default: unmapped at once, pages faulted in again next time
    assert freed[True] < 2**20  # tuned: kept for the next batch


def test_session_engine_choice(monkeypatch):
    """'auto' on the CPU: the numba engine at every length; where numba does not load,
    the numpy engine up to NUMPY_MAX_SAMPLES, then the plan's torch choice. Explicit
    engines, GPUs and complex output keep theirs."""
    import facerhythm_core.vqt_numba as vqt_numba

    p = SpectrogramParams.from_mapping(PARAMS)
    assert session_engine(p, "cpu", 10) == "numba"
    assert session_engine(p, "cpu", 100 * NUMPY_MAX_SAMPLES) == "numba"
    assert session_engine(p, "cuda", 10**9) == "auto"
    assert session_engine(SpectrogramParams.from_mapping({**PARAMS, "take_abs": False}), "cpu", 10**9) == "auto"
    assert session_engine(SpectrogramParams.from_mapping({**PARAMS, "engine": "numpy"}), "cpu", 10) == "numpy"
    monkeypatch.setattr(vqt_numba, "HAVE_NUMBA", False)  # as where llvmlite fails to load
    assert session_engine(p, "cpu", NUMPY_MAX_SAMPLES) == "numpy"
    assert session_engine(p, "cpu", NUMPY_MAX_SAMPLES + 1) == "auto"


def test_spectrogram_stage_on_the_cpu_never_imports_torch(tmp_path):
    """A CPU spectrogram job runs the numba engine ('auto'), or the numpy engine
    when asked, without loading torch (~1.6 s a job), and writes what the torch 'fft'
    engine writes, to float32 rounding."""
    import subprocess
    import sys
    from pathlib import Path

    (a, home), (b, _) = _tracks(500, 5, seed=7), _tracks(433, 5, seed=8)
    b = b - _tracks(433, 5, seed=8)[1] + home
    trk = tmp_path / "tracking.h5"
    _write_tracking(trk, [a, b], home)
    params = {**PARAMS, "device": "auto"}
    repo = Path(__file__).resolve().parents[1]
    compute_session_spectrograms(trk, tmp_path / "fft.h5", {**PARAMS, "engine": "fft"}, session="s")
    ref = read_spectrograms(tmp_path / "fft.h5")
    for engine, asked in (("numba", "auto"), ("numpy", "numpy")):
        prog = (
            "import sys, logging\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from facerhythm_core import stages\n"
            f"stages.spectrogram({str(trk)!r}, {str(tmp_path / engine)!r}, session='s', "
            f"params={ ({**params, 'engine': asked})!r})\n"
            "print('torch' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=repo)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split()[-1] == "False"
        assert f"VQT engine {engine}" in out.stderr
        res = read_spectrograms(tmp_path / engine)
        for key in ("0", "1"):
            np.testing.assert_allclose(
                res["spectrograms"][key],
                ref["spectrograms"][key],
                rtol=0,
                atol=2e-6 * np.abs(ref["spectrograms"][key]).max(),
            )
            np.testing.assert_allclose(res["mean_power"][key], ref["mean_power"][key], rtol=2e-6)
