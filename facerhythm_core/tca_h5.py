"""The TCA's files: reading spectrograms.h5 for the fit, writing and reading tca.h5
(layout in docs/tca.md and docs/file_formats.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .errors import TCAError
from .keys import natural

if TYPE_CHECKING:
    from .tca import TCAResult


@dataclass
class Spectrograms:
    """Contents of a spectrograms.h5 file that TCA needs."""

    spectrograms: dict
    frequencies: np.ndarray
    point_positions: np.ndarray
    times: dict
    fs: float | None
    session_times: dict = field(default_factory=dict)
    gap_fraction: dict = field(default_factory=dict)


def load_spectrograms(path: str | Path) -> Spectrograms:
    """The TCA's view of a spectrograms.h5 (read by
    :func:`facerhythm_core.spectrogram.read_spectrograms`): ``spectrograms/{i}``,
    ``frequencies``, ``point_positions`` and the time axes, checked for what TCA needs."""
    from .spectrogram import read_spectrograms

    path = Path(path)
    if not path.exists():
        raise TCAError(f"spectrogram file {path} does not exist; run the spectrogram rule")
    raw = read_spectrograms(path)
    spec = raw.get("spectrograms", {})
    if not spec:
        raise TCAError(f"{path} has no spectrograms/ group; was it written by the spectrogram stage?")
    freqs = raw.get("frequencies")
    if freqs is None:
        freqs = np.arange(next(iter(spec.values())).shape[2], dtype=np.float32)
    pts = raw.get("point_positions")
    if pts is None:
        pts = np.zeros((0, 2), np.float32)
    axes = {
        name: {k: v for k, v in raw.get(name, {}).items() if k in spec}
        for name in ("times", "session_times", "gap_fraction")
    }
    fs = float(raw["attrs"]["fs"]) if "fs" in raw["attrs"] else None
    return Spectrograms(spec, freqs, pts, axes["times"], fs, axes["session_times"], axes["gap_fraction"])


def _window_times(t: np.ndarray, w) -> np.ndarray:
    return t if w is None else t[w[0] : w[1] + 1]


def write_tca_h5(
    h5,
    result: TCAResult,
    frequencies=None,
    times: Mapping | None = None,
    point_positions: Mapping | np.ndarray | None = None,
    time_axes: Mapping[str, Mapping] | None = None,
) -> None:
    """Write a :class:`TCAResult` into an open h5py File (layout in ``docs/tca.md``).

    Parameters
    ----------
    h5 : h5py.File
    result : TCAResult
    frequencies : ndarray (F,), optional
    times : mapping of element key -> (T_k,) seconds, optional
        Keys as in the layouts (``"0"`` or ``"session/0"``); windows are applied here.
    point_positions : ndarray (N, 2), or mapping session -> (N, 2), optional
    time_axes : mapping of name -> (mapping of element key -> (T_k,)), optional
        More per-time-bin axes written like ``times`` as ``{name}/{key}``, e.g.
        ``session_times`` (s, session clock) and ``gap_fraction``.
    """
    import h5py

    str_dt = h5py.string_dtype()
    h5.attrs["videos"] = result.videos
    h5.attrs["n_decompositions"] = len(result.decompositions)
    h5.create_dataset("decomposition_names", data=list(result.decompositions), dtype=str_dt)
    if frequencies is not None:
        h5.create_dataset("frequencies", data=np.asarray(frequencies))
    if point_positions is not None:
        if isinstance(point_positions, Mapping):
            for sid, p in point_positions.items():
                h5.create_dataset(f"point_positions/{sid}", data=np.asarray(p, np.float32))
        else:
            h5.create_dataset("point_positions", data=np.asarray(point_positions, np.float32))
    axes = {"times": times or {}, **(time_axes or {})}
    for name, d in result.decompositions.items():
        g = h5.create_group(f"decompositions/{name}")
        _write_attrs(g, d)
        g.create_dataset("weights", data=d.fit.weights)
        g.create_dataset("evr", data=d.evr)
        g.create_dataset("evr_model", data=d.evr_model)
        g.create_dataset("errors", data=d.fit.errors)
        g.create_dataset("order", data=d.order)
        _write_factors(g, d)
        lay = d.layout
        if lay.stack_dim is not None:
            g.create_dataset(f"{lay.stack_dim}_names", data=list(lay.keys), dtype=str_dt)
        _write_time_axes(g, lay, axes)
        if len(lay.keys) > 1 and lay.stack_dim is None:
            _write_time_split(g, lay)
        if d.sweep is not None:
            s = h5.create_group(f"rank_sweep/{name}")
            for k, v in d.sweep.items():
                s.create_dataset(k, data=v)


def _write_attrs(g, d) -> None:
    """A decomposition's layout, fit summary and normalization as attributes of ``g``."""
    lay = d.layout
    g.attrs["dims"] = list(lay.dims)
    g.attrs["keys"] = list(lay.keys)
    g.attrs["n_time"] = np.asarray(lay.n_time, np.int64)
    g.attrs["n_points"] = lay.n_points
    g.attrs["complex_unfolded"] = lay.complex_unfolded
    g.attrs["windows"] = np.asarray(
        [[-1, -1] if w is None else list(w) for w in (lay.windows or [None] * len(lay.keys))], np.int64
    )
    g.attrs["rank"] = d.fit.rank
    g.attrs["method"] = d.fit.method
    g.attrs["engine"] = d.fit.engine
    g.attrs["seconds"] = d.fit.seconds
    g.attrs["n_iter"] = len(d.fit.errors)
    g.attrs["evr_model"] = d.evr_model
    g.attrs["rel_error"] = d.rel_error
    for k, v in d.normalization.items():
        g.attrs[f"normalization_{k}"] = v


def _write_factors(g, d) -> None:
    """``fitted/{i}`` (the factor matrices as fitted, float32) and ``factors/{axis}``
    (on the original axes; the time factor per element key when split)."""
    for i, (dim, f) in enumerate(zip(d.layout.dims, d.fit.factors)):
        ds = g.create_dataset(f"fitted/{i}", data=f.astype(np.float32))
        ds.attrs["axis"] = dim
    for axis, f in d.factors.items():
        if isinstance(f, Mapping):
            for key, a in f.items():
                ds = g.create_dataset(f"factors/{axis}/{key}", data=_store(a))
                ds.attrs["axis"] = axis
                ds.attrs["key"] = key
        else:
            ds = g.create_dataset(f"factors/{axis}", data=_store(f))
            ds.attrs["axis"] = axis


def _write_time_axes(g, lay, axes: Mapping[str, Mapping]) -> None:
    """Per-time-bin axes (``times``, ``session_times``, ``gap_fraction``) of each element
    key of the layout, cut to its window, as ``{name}/{key}``."""
    for axis_name, axis in axes.items():
        for key, w in zip(lay.keys, lay.windows or [None] * len(lay.keys)):
            if key in axis:
                dtype = np.float32 if axis_name == "gap_fraction" else np.float64
                g.create_dataset(f"{axis_name}/{key}", data=_window_times(np.asarray(axis[key], dtype), w))


def _write_time_split(g, lay) -> None:
    """Where each element (video, or session/video) sits on the fitted time axis."""
    import h5py

    str_dt = h5py.string_dtype()
    mult = 2 if lay.complex_unfolded else 1
    edges = np.cumsum([0] + [n * mult for n in lay.n_time])
    g.create_dataset("time_split/key", data=list(lay.keys), dtype=str_dt)
    g.create_dataset("time_split/start", data=edges[:-1].astype(np.int64))
    g.create_dataset("time_split/stop", data=edges[1:].astype(np.int64))
    if all("/" in k for k in lay.keys):
        g.create_dataset("time_split/session", dtype=str_dt, data=[k.split("/", 1)[0] for k in lay.keys])


def _store(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.complex64) if np.iscomplexobj(a) else a.astype(np.float32)


def read_tca_h5(path: str | Path, *, fitted: bool = True) -> dict:
    """Read a tca.h5 (one session's or a joint one) back into nested dicts: the one
    reader of the format (the figures' view, :func:`facerhythm_core.results.read_tca`,
    is built on it).

    Parameters
    ----------
    path : str or Path
    fitted : bool
        Also read each decomposition's fitted (normalised) tensors, which can be as large
        as the spectrograms; ``False`` gives ``None`` in their place.

    Returns
    -------
    dict
        ``{name: {"factors": {axis: array or {key: array}}, "fitted", "weights", "evr",
        "evr_model", "errors", "order", "attrs": {...}, "times", "session_times",
        "gap_fraction", "time_split", "labels": {dataset name: [str]} (the ``*_names``
        datasets), "rank_sweep": {...} or None}}``, in the file's decomposition order,
        plus top-level ``"frequencies"`` (F,), ``"point_positions"`` (array, or
        ``{session: array}`` in a joint file) and ``"sessions"`` (joint files) when stored.
    """
    import h5py

    def tree(g):
        return {k: tree(v) if isinstance(v, h5py.Group) else v[()] for k, v in g.items()}

    def strings(a):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in a]

    out = {}
    with h5py.File(path, "r") as f:
        if "decompositions" not in f:
            raise TCAError(f"{path} has no 'decompositions' group; was it written by the TCA stage?")
        names = (
            strings(f["decomposition_names"][()]) if "decomposition_names" in f else natural(list(f["decompositions"]))
        )
        for name in names:
            g = f["decompositions"][name]
            out[name] = {
                "factors": tree(g["factors"]),
                "fitted": [g["fitted"][str(i)][()] for i in range(len(g["fitted"]))] if fitted else None,
                "weights": g["weights"][()],
                "evr": g["evr"][()],
                "evr_model": float(g["evr_model"][()]),
                "errors": g["errors"][()],
                "order": g["order"][()],
                "attrs": dict(g.attrs),
                "times": tree(g["times"]) if "times" in g else {},
                "session_times": tree(g["session_times"]) if "session_times" in g else {},
                "gap_fraction": tree(g["gap_fraction"]) if "gap_fraction" in g else {},
                "time_split": tree(g["time_split"]) if "time_split" in g else None,
                "labels": {k: strings(g[k][()]) for k in g if k.endswith("_names")},
                "rank_sweep": (tree(f["rank_sweep"][name]) if "rank_sweep" in f and name in f["rank_sweep"] else None),
            }
        if "frequencies" in f:
            out["frequencies"] = f["frequencies"][()]
        if "point_positions" in f:
            pp = f["point_positions"]
            out["point_positions"] = tree(pp) if isinstance(pp, h5py.Group) else pp[()]
        if "sessions" in f:
            out["sessions"] = strings(f["sessions"][()])
    return out
