"""Spectrograms of tracked points: displacement traces -> VQT -> normalisation -> HDF5.

Re-implements face-rhythm 0.3.3 ``VQT_Analyzer`` (see ``docs/spectrogram.md``):

1. each point's x and y displacement from its home position (no detrending), rows
   ``0..N-1`` = x of points ``0..N-1``, rows ``N..2N-1`` = y;
2. a VQT of every row (:mod:`facerhythm_core.vqt`);
3. per-time-bin power normalisation pooled over all 2N rows of a video, then an
   ``f**beta`` tilt, output shape ``(2, N, F, T')``.

Unlike the reference, the sample rate defaults to the video frame rate, ``f_max`` is
clamped below Nyquist with a warning, and a whole session is never held in memory:
a video that fits a memory budget is transformed, normalised and written at once; a
longer one goes through in chunks of points, its raw spectrograms written to the HDF5
dataset and rescaled in place once the pooled power ``m(t)`` of the video is known.
"""

from __future__ import annotations

import datetime as _dt
import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError, SpectrogramError
from .keys import natural
from .runtime import HeapTrimmer
from .spectrogram_clock import stream_clock
from .vqt import HOST_ENGINES, plan_vqt, time_axis
from .vqt_filters import FilterBank, make_vqt_filters

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pieces


def displacement_traces(points_tracked: np.ndarray, point_positions: np.ndarray) -> np.ndarray:
    """Displacement of every point from its home position, as rows.

    Parameters
    ----------
    points_tracked : ndarray, shape (T, N, 2)
        Tracked (x, y) positions in pixels.
    point_positions : ndarray, shape (N, 2)
        Home (x, y) positions in pixels.

    Returns
    -------
    ndarray, float32, shape (2N, T)
        Rows ``0..N-1``: x displacement of points ``0..N-1``; rows ``N..2N-1``: y.
    """
    pts = np.asarray(points_tracked)
    home = np.asarray(point_positions)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise SpectrogramError(f"points_tracked must be (T, N, 2), got shape {pts.shape}")
    if home.shape != (pts.shape[1], 2):
        raise SpectrogramError(
            f"point_positions must be (N, 2) = ({pts.shape[1]}, 2) to match points_tracked, got {home.shape}"
        )
    d = pts.astype(np.float32) - home.astype(np.float32)[None]  # (T, N, 2)
    return np.ascontiguousarray(d.transpose(2, 1, 0).reshape(2 * pts.shape[1], pts.shape[0]))


def resolve_f_max(f_max: float, fs: float, max_f_nyquist_fraction: float = 0.9) -> float:
    """``f_max``, clamped to ``max_f_nyquist_fraction * fs / 2`` with a warning if above it.

    The reference's defaults put the top filter exactly on Nyquist (60 Hz at 120 Hz),
    where its analytic filter is degenerate. With a fraction of 1.0 that case is kept.
    """
    if not 0 < max_f_nyquist_fraction <= 1:
        raise ConfigError(f"spectrogram.max_f_nyquist_fraction must be in (0, 1], got {max_f_nyquist_fraction}")
    limit = max_f_nyquist_fraction * fs / 2
    if f_max > limit * (1 + 1e-12):
        warnings.warn(
            f"spectrogram f_max={f_max:g} Hz is above {max_f_nyquist_fraction:g} x Nyquist "
            f"({limit:g} Hz at fs={fs:g} Hz); clamped to {limit:g} Hz",
            stacklevel=2,
        )
        return float(limit)
    return float(f_max)


def frame_power(spec, spectrogram_exponent: float = 1.0) -> np.ndarray:
    """Sum over rows and frequencies of ``|spec| ** exponent`` per time bin.

    Parameters
    ----------
    spec : ndarray, shape (R, F, T')
        Raw VQT output (real magnitudes or complex).

    Returns
    -------
    ndarray, float64, shape (T',)
        Divide by the total number of rows (2N) to get the reference's m(t).
    """
    e = np.abs(np.asarray(spec))  # float32 for float32 / complex64 input
    if spectrogram_exponent != 1:
        e = e.astype(np.float64) ** spectrogram_exponent
    # accumulate in float64 without a float64 copy of the whole chunk
    return np.add.reduce(e.reshape(-1, e.shape[-1]), axis=0, dtype=np.float64)


def normalization_scale(
    freqs, mean_power, normalization_factor: float = 0.95, one_over_f_exponent: float = 0.5
) -> np.ndarray:
    """``f**beta / (alpha * m(t) + (1 - alpha))`` as float64, shape (F, T')."""
    a = float(normalization_factor)
    den = a * np.asarray(mean_power, dtype=np.float64) + (1 - a)
    tilt = np.asarray(freqs, dtype=np.float64) ** one_over_f_exponent
    return tilt[:, None] / den[None, :]


def normalize_spectrogram(
    spec,
    freqs,
    mean_power,
    normalization_factor: float = 0.95,
    spectrogram_exponent: float = 1.0,
    one_over_f_exponent: float = 0.5,
    out=None,
) -> np.ndarray:
    """The reference's normalisation (``VQT_Analyzer.transform`` step 3).

    ``E = |S|**gamma``; ``S_hat = E / (alpha * m(t) + (1 - alpha)) * f**beta``; complex
    input keeps its phase. The (F, T') factor is formed in float64 and applied in
    float32 (within 1.5 float32 ulp of an all-float64 evaluation).

    Parameters
    ----------
    spec : ndarray, shape (..., F, T')
        Raw VQT output.
    freqs : ndarray, shape (F,)
        Centre frequencies in Hz.
    mean_power : ndarray, shape (T',)
        m(t): the mean over all 2N rows of the video of ``sum_f |S|**gamma``.
    normalization_factor, spectrogram_exponent, one_over_f_exponent : float
        alpha, gamma, beta.
    out : ndarray, optional
        Where to write the result (may be ``spec`` itself, for in-place use).

    Returns
    -------
    ndarray, float32 (complex64 for complex input), same shape as ``spec``.
    """
    spec = np.asarray(spec)
    scale = normalization_scale(freqs, mean_power, normalization_factor, one_over_f_exponent).astype(np.float32)
    if np.iscomplexobj(spec):
        spec = spec.astype(np.complex64, copy=False)
        mag = np.abs(spec)
        e = mag if spectrogram_exponent == 1 else (mag.astype(np.float64) ** spectrogram_exponent).astype(np.float32)
        phase = np.where(mag > 0, spec / np.where(mag > 0, mag, 1), 1).astype(np.complex64)
        res = np.multiply(e * scale, phase, out=out)
        return res
    spec = spec.astype(np.float32, copy=False)
    if spectrogram_exponent == 1:
        e = np.abs(spec, out=out) if out is not None else np.abs(spec)
    else:
        e = (np.abs(spec).astype(np.float64) ** spectrogram_exponent).astype(np.float32)
    return np.multiply(e, scale, out=out if out is not None else e)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class SpectrogramParams:
    """Parameters of the spectral stage (config section ``spectrogram``).

    ``fs`` None means the session's frame rate. ``engine``, ``carrier_fix`` and
    ``complex_pooling`` are not in the config schema: their defaults are this
    project's choice, the other values reproduce the reference's pipeline defaults.
    """

    device: str = "auto"
    fs: float | None = None
    q_low_f: float = 4.0
    q_high_f: float = 10.0
    f_min: float = 1.0
    f_max: float = 60.0
    max_f_nyquist_fraction: float = 0.9
    n_freq_bins: int = 36
    win_size: int | None = None
    window_type: str = "hann"
    symmetry: str = "center"
    taper_asymmetric: bool = True
    downsample_factor: int = 20
    padding: str = "valid"
    take_abs: bool = True
    normalization_factor: float = 0.95
    spectrogram_exponent: float = 1.0
    one_over_f_exponent: float = 0.5
    points_per_chunk: int = 256
    engine: str = "auto"
    carrier_fix: bool = True
    complex_pooling: str = "mean"

    @classmethod
    def from_mapping(cls, cfg: dict | None) -> "SpectrogramParams":
        """Build from a config mapping; unknown keys are an error."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(cfg) - known)
        if extra:
            raise ConfigError(f"unknown spectrogram setting(s) {extra}; known: {sorted(known)}")
        p = cls(**cfg)
        if not 0 <= p.normalization_factor <= 1:
            raise ConfigError(f"spectrogram.normalization_factor must be in [0, 1], got {p.normalization_factor}")
        if p.spectrogram_exponent <= 0:
            raise ConfigError(f"spectrogram.spectrogram_exponent must be > 0, got {p.spectrogram_exponent}")
        if int(p.points_per_chunk) < 1:
            raise ConfigError(f"spectrogram.points_per_chunk must be >= 1, got {p.points_per_chunk}")
        return p

    def filter_bank(self, fs: float) -> FilterBank:
        """The filter bank at sample rate ``fs`` (f_max clamped below Nyquist)."""
        f_max = resolve_f_max(self.f_max, fs, self.max_f_nyquist_fraction)
        return make_vqt_filters(
            fs=fs,
            q_low_f=self.q_low_f,
            q_high_f=self.q_high_f,
            f_min=self.f_min,
            f_max=f_max,
            n_freq_bins=self.n_freq_bins,
            win_size=self.win_size,
            window_type=self.window_type,
            symmetry=self.symmetry,
            taper_asymmetric=self.taper_asymmetric,
            carrier_fix=self.carrier_fix,
        )


# --------------------------------------------------------------------------- one video


def spectrogram_from_tracks(
    points_tracked,
    point_positions,
    bank: FilterBank,
    params: SpectrogramParams | None = None,
    device: str = "cpu",
    label: str = "video",
):
    """Normalised spectrogram of one video, in memory (small data, tests, notebooks).

    Returns
    -------
    spec : ndarray, shape (2, N, F, T')
        float32, or complex64 when ``params.take_abs`` is False.
    x_axis : ndarray, float64, shape (T',)
        Sample index of each bin centre.
    mean_power : ndarray, float64, shape (T',)
        The pooled m(t) used for the normalisation.
    """
    p = params or SpectrogramParams()
    rows = displacement_traces(points_tracked, point_positions)
    plan = _plan(bank, rows.shape[1], p, device, label, session_engine(p, device, rows.size))
    raw = plan.transform_array(rows)
    m = frame_power(raw, p.spectrogram_exponent) / rows.shape[0]
    spec = normalize_spectrogram(
        raw, bank.freqs, m, p.normalization_factor, p.spectrogram_exponent, p.one_over_f_exponent
    )
    n = rows.shape[0] // 2
    x_axis = time_axis(rows.shape[1], bank.win_size, p.downsample_factor, p.padding)
    return spec.reshape(2, n, *spec.shape[1:]), x_axis, m


#: where numba does not load, CPU sessions of at most this many samples (rows x
#: frames, all videos) use the 'numpy' engine under ``engine: auto``: importing torch
#: costs a job ~1.6 s (~1.0 s more wall per job, measured), and the numpy engine's
#: transform is ~15-25 ns a sample slower than torch's 'fft' on 2 threads, so torch
#: repays its import from ~40-60 M samples (40 M: ~8 minutes of 700 rows at 120 Hz)
NUMPY_MAX_SAMPLES = 40_000_000


def session_engine(p: SpectrogramParams, device: str, n_samples: int) -> str:
    """The VQT engine for a session of ``n_samples`` samples (rows x frames, all videos).

    ``p.engine`` unless it is 'auto': then, for magnitude output on the CPU, 'numba'
    (the fastest there at every length: 2-2.5x the 'numpy' engine's transform; the
    job pays ~0.5 s once to load numba, against ~1.6 s for torch), or where numba
    does not load 'numpy' up to :data:`NUMPY_MAX_SAMPLES`; else the plan's own choice
    ('fft' on the CPU, 'direct' on a GPU or for complex output). The CPU engines
    never import torch.
    """
    if p.engine != "auto" or not p.take_abs or str(device) != "cpu":
        return p.engine
    from .vqt_numba import HAVE_NUMBA

    if HAVE_NUMBA:
        return "numba"
    return "numpy" if n_samples <= NUMPY_MAX_SAMPLES else p.engine


def _plan(bank, n_samples, p: SpectrogramParams, device, label, engine: str | None = None):
    return plan_vqt(
        bank,
        n_samples,
        downsample_factor=p.downsample_factor,
        padding=p.padding,
        take_abs=p.take_abs,
        complex_pooling=p.complex_pooling,
        device=device,
        engine=engine or p.engine,
        label=label,
    )


# --------------------------------------------------------------------------- session file


def _video_keys(group) -> list[str]:
    return natural(group.keys())


def compute_session_spectrograms(
    tracking_path,
    output_path,
    params: SpectrogramParams | dict | None = None,
    session: str = "session",
    log: logging.Logger | None = None,
    memory_budget: int = 512 * 2**20,
) -> dict:
    """Spectrograms of every video of a session, from tracking.h5 to spectrograms.h5.

    A video whose spectrogram and tracks fit in ``memory_budget`` bytes is
    transformed into memory, normalised there and written once. A longer one is
    streamed: each chunk of ``points_per_chunk`` points is transformed and its raw
    spectrogram written to the output dataset while its power is added to the
    video's m(t); a second pass reads each chunk back and normalises it in place.
    Both give the same file contents.

    Parameters
    ----------
    tracking_path : path
        ``tracking.h5`` (``points_tracked/{i}`` (T_i, N, 2), ``point_positions``,
        attr ``frame_rate``).
    output_path : path
        HDF5 file to write (overwritten); layout in ``docs/spectrogram.md``.
    params : SpectrogramParams or mapping
        The config ``spectrogram`` section.
    session : str
        Session id, used in messages.
    log : logging.Logger, optional
        Where progress goes (default: this module's logger).
    memory_budget : int
        Bytes a video's raw spectrogram plus its tracks may take for the in-memory
        path; above it the two-pass streaming path bounds memory by
        ``points_per_chunk``.

    Returns
    -------
    dict
        Summary: fs, f_max used, window size, shapes per video, seconds.
    """
    import h5py
    import time

    from .device import select_device
    from .io import write_provenance

    log = log or logger
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    p = params if isinstance(params, SpectrogramParams) else SpectrogramParams.from_mapping(params)
    device = select_device(p.device)
    with h5py.File(tracking_path, "r") as tr:
        if "points_tracked" not in tr or "point_positions" not in tr:
            raise SpectrogramError(
                f"session {session}: {tracking_path} lacks points_tracked/ or point_positions; re-run the tracking rule"
            )
        frame_rate = tr.attrs.get("frame_rate")
        if p.fs is None and frame_rate is None:
            raise SpectrogramError(
                f"session {session}: {tracking_path} has no frame_rate attribute and "
                "spectrogram.fs is null; set spectrogram.fs or re-run tracking"
            )
        fs = float(p.fs if p.fs is not None else frame_rate)
        home = tr["point_positions"][()].astype(np.float32)
        keys = _video_keys(tr["points_tracked"])
        paths = (
            [v.decode() if isinstance(v, bytes) else str(v) for v in tr["video_paths"][()]]
            if "video_paths" in tr
            else []
        )
        n_pts = home.shape[0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bank = p.filter_bank(fs)
        for w in caught:
            log.warning("session %s: %s", session, w.message)
        f_max_used = float(bank.freqs[-1])
        log.info(
            "session %s: fs=%g Hz (%s), %d filters %.3g-%.3g Hz, W=%d, ds=%d, %s, device=%s, %d points, %d video(s)",
            session,
            fs,
            "config" if p.fs is not None else "frame rate",
            bank.n_freq_bins,
            bank.freqs[0],
            f_max_used,
            bank.win_size,
            p.downsample_factor,
            p.padding,
            device,
            n_pts,
            len(keys),
        )
        # check every video before any work, so a short last video fails fast
        clocks = {}
        for key in keys:
            shape = tr["points_tracked"][key].shape
            if len(shape) != 3 or shape[1:] != (n_pts, 2):
                raise SpectrogramError(
                    f"session {session}: points_tracked/{key} has shape {shape}, expected (T, {n_pts}, 2)"
                )
            clocks[key] = stream_clock(tr, key, shape[0], fs, session, log)
        engine = session_engine(p, device, 2 * n_pts * sum(c.n_samples for c in clocks.values()))
        plans = {}  # by length: trials of equal length share one
        for key in keys:
            where = f" ({paths[int(key)]})" if key.isdigit() and int(key) < len(paths) else ""
            T = clocks[key].n_samples
            if T not in plans:
                plans[T] = _plan(bank, T, p, device, f"session {session}, video {key}{where}", engine)
        summary = {"fs": fs, "f_max": f_max_used, "win_size": bank.win_size, "videos": {}}
        out_dtype = np.float32 if p.take_abs else np.complex64
        with h5py.File(output_path, "w") as out:
            out.attrs["fs"] = fs
            out.attrs["frame_rate"] = float(frame_rate) if frame_rate is not None else fs
            out.attrs["session"] = str(session)
            out.attrs["win_size"] = bank.win_size
            out.attrs["carrier_fix"] = bool(p.carrier_fix)
            out.create_dataset("frequencies", data=bank.freqs.astype(np.float32))
            out.create_dataset("filters", data=bank.filters)
            out.create_dataset("wins", data=bank.wins)
            out.create_dataset("point_positions", data=home)
            g_spec = out.create_group("spectrograms")
            g_x, g_t, g_m = out.create_group("x_axis"), out.create_group("times"), out.create_group("mean_power")
            trimmer = HeapTrimmer()
            for key in keys:
                clock = clocks[key]
                dset_in = clock.source(tr["points_tracked"][key])
                T = clock.n_samples
                plan = plans[T]
                log.info("session %s video %s: VQT engine %s", session, key, plan.engine)
                n_out = plan.n_out
                x_axis = time_axis(T, bank.win_size, p.downsample_factor, p.padding)
                chunk_t = max(1, min(n_out, max(1, 2**20 // max(1, bank.n_freq_bins * 16))))
                dset = g_spec.create_dataset(
                    key,
                    shape=(2, n_pts, bank.n_freq_bins, n_out),
                    dtype=out_dtype,
                    chunks=(1, max(1, min(n_pts, 16)), bank.n_freq_bins, chunk_t) if n_pts else None,
                )
                tv = time.perf_counter()
                itemsize = np.dtype(out_dtype).itemsize
                in_memory = (
                    2 * n_pts * bank.n_freq_bins * n_out * itemsize + T * n_pts * 2 * dset_in.dtype.itemsize
                ) <= memory_budget
                if in_memory:
                    m = _video_in_memory(dset_in, home, plan, p, dset, out_dtype)
                else:  # the two passes straight on the HDF5 datasets, memory bounded by chunks
                    m = _two_pass(dset_in, home, plan, p, dset)
                log.info(
                    "session %s video %s: %s normalisation",
                    session,
                    key,
                    "in-memory" if in_memory else "streaming (two-pass)",
                )
                trimmer.after_video()
                g_x.create_dataset(key, data=x_axis)
                g_t.create_dataset(key, data=x_axis / fs)
                g_m.create_dataset(key, data=m)
                clock.write(out, key, x_axis, bank.win_size)
                dt = time.perf_counter() - tv
                log.info(
                    "session %s video %s: %d frames -> (2, %d, %d, %d) in %.2f s (%.2f M samples/s)",
                    session,
                    key,
                    T,
                    n_pts,
                    bank.n_freq_bins,
                    n_out,
                    dt,
                    2 * n_pts * T / max(dt, 1e-9) / 1e6,
                )
                summary["videos"][key] = {"num_frames": T, "shape": [2, n_pts, bank.n_freq_bins, n_out], "seconds": dt}
            summary["seconds"] = time.perf_counter() - t0
            record = asdict(p)
            record.update(fs_used=fs, f_max_used=f_max_used, win_size_used=bank.win_size, device_used=device)
            write_provenance(
                out,
                "spectrogram",
                params=record,
                inputs=[tracking_path],
                extra={"session": session, "summary": summary},
                started=started,
            )
    return summary


def _video_in_memory(dset_in, home, plan, p: SpectrogramParams, dset, out_dtype) -> np.ndarray:
    """Whole video in memory: one read, the two passes on an array, one write."""
    raw = np.empty((2, home.shape[0], plan.bank.n_freq_bins, plan.n_out), dtype=out_dtype)
    m = _two_pass(dset_in[()], home, plan, p, raw)
    if raw.size:
        dset[...] = raw
    return m


#: bytes one chunk of points may take (its tracks, rows and raw spectrogram)
CHUNK_BUDGET = 256 * 2**20


def _chunk_points(points_per_chunk: int, n_frames: int, n_freq: int, n_out: int, itemsize: int) -> int:
    """Points per chunk: ``points_per_chunk``, fewer when a chunk's tracks (read and as
    rows) and raw spectrogram would pass :data:`CHUNK_BUDGET`, so that the peak stays
    flat in video length (an hour at 90 fps is ~10 MB per point: 25 points a chunk)."""
    per_point = 2 * n_frames * 2 * 4 + 2 * n_freq * n_out * itemsize
    return max(1, min(points_per_chunk, CHUNK_BUDGET // max(1, per_point)))


def _two_pass(src, home, plan, p: SpectrogramParams, dst) -> np.ndarray:
    """Raw spectrograms of ``src`` (T, N, 2) into ``dst`` (2, N, F, T') with the pooled
    power m(t), then ``dst`` normalised in place, both by chunks of points. ``src`` and
    ``dst`` are arrays or h5py datasets. Returns m(t)."""
    n_pts = home.shape[0]
    k = _chunk_points(
        int(p.points_per_chunk), src.shape[0], plan.bank.n_freq_bins, plan.n_out, np.dtype(dst.dtype).itemsize
    )
    chunks = [(a, min(n_pts, a + k)) for a in range(0, n_pts, k)]
    # a host engine fills an in-memory dst at once, its (2N,) rows being dst's (2, N)
    # (the engine's own buffers are per tile); m(t) is summed by the same chunks either
    # way, so both paths give the same numbers
    whole = isinstance(dst, np.ndarray) and plan.engine in HOST_ENGINES and dst.flags.c_contiguous
    if whole and n_pts:
        plan.transform_array(displacement_traces(src[()], home), out=dst.reshape(2 * n_pts, *dst.shape[2:]))
    power = np.zeros(plan.n_out, dtype=np.float64)
    for a, b in chunks:
        if whole:
            raw = dst[:, a:b]
        else:
            raw = plan.transform_array(displacement_traces(src[:, a:b, :], home[a:b]))
            dst[:, a:b] = raw.reshape(2, b - a, *raw.shape[1:])
        power += frame_power(raw, p.spectrogram_exponent)
    m = power / max(1, 2 * n_pts)
    for a, b in chunks:
        block = dst[:, a:b]  # a view of an array; a copy read from a dataset
        normalize_spectrogram(
            block, plan.bank.freqs, m, p.normalization_factor, p.spectrogram_exponent, p.one_over_f_exponent, out=block
        )
        if not isinstance(dst, np.ndarray):
            dst[:, a:b] = block
    return m


def read_spectrograms(path) -> dict:
    """Load a spectrograms.h5 into memory: the one reader of the format.

    Returns
    -------
    dict
        ``{"spectrograms": {key: (2, N, F, T') float32}, "x_axis", "times", "mean_power",
        "session_times", "gap_fraction"}`` (each ``{key: array}``, keys in natural order),
        ``"frequencies"`` (F,) Hz, ``"filters"``, ``"wins"``, ``"point_positions"`` (N, 2),
        each where the file has it, and ``"attrs"`` (the file's attributes).
    """
    import h5py

    with h5py.File(path, "r") as f:
        out = {
            name: {k: f[name][k][()] for k in _video_keys(f[name])}
            for name in ("spectrograms", "x_axis", "times", "mean_power", "session_times", "gap_fraction")
            if name in f
        }
        for name in ("frequencies", "filters", "wins", "point_positions"):
            if name in f:
                out[name] = f[name][()]
        out["attrs"] = dict(f.attrs)
    return out
