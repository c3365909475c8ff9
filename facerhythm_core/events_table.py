"""Events files: reading and checking the table of a session's events.

An events file is a table (TSV or CSV, one header row) with a ``time`` column (seconds
on the session clock, docs/timing.md) and a ``label`` column; other columns are kept
as text. :func:`check_events_file` lists every problem with such a file, naming the
file, the line and the column, before any job runs; :func:`session_extent` gives the
session's time span to check the events against before the videos are probed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from .errors import EventsError
from .io import cached_per_file

#: columns every events file needs
REQUIRED_COLUMNS = ("time", "label")
#: at most this many bad rows are listed per file
MAX_LISTED = 20


# --------------------------------------------------------------------------- reading


@dataclass
class Events:
    """The rows of an events file, in file order.

    Attributes
    ----------
    path : str
    time : ndarray, float64, (n,)
        Seconds on the session clock.
    label : list of str
    line : ndarray, int64, (n,)
        Line of each event in the file (1-based, as an editor shows it).
    extra : dict of str -> list of str
        The file's other columns, one cell text per event.
    """

    path: str
    time: np.ndarray
    label: list
    line: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    @property
    def labels(self) -> list[str]:
        """Distinct labels in order of first appearance."""
        return list(dict.fromkeys(self.label))


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".csv":
        return ","
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if "\t" in header else ","


def _parse(path: Path) -> tuple[Events | None, list[str]]:
    """Read an events file; return the events read and the problems found."""
    where = f"events file {path}"
    if not path.is_file():
        return None, [f"{where}: not found"]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"]
    rows = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        return None, [f"{where}: empty (need a header row with `time` and `label`, then one row per event)"]
    delim = _delimiter(path, rows[0][1])
    parsed = list(csv.reader([ln for _, ln in rows], delimiter=delim))
    header = [c.strip() for c in parsed[0]]
    hline = rows[0][0]
    problems = _header_problems(where, header, hline, delim)
    if problems:
        return None, problems
    ti, li = header.index("time"), header.index("label")
    others = [(j, c) for j, c in enumerate(header) if c not in REQUIRED_COLUMNS]
    times, labels, lines = [], [], []
    extra: dict[str, list[str]] = {c: [] for _, c in others}
    for (lineno, _), cells in zip(rows[1:], parsed[1:]):
        row = _read_row(f"{where}, line {lineno}", cells, len(header), ti, li)
        if isinstance(row, str):
            problems.append(row)
            continue
        times.append(row[0])
        labels.append(row[1])
        lines.append(lineno)
        for j, c in others:
            extra[c].append(cells[j].strip())
    if not times and not problems:
        problems.append(f"{where}: a header but no events")
    ev = Events(str(path), np.asarray(times, np.float64), labels, np.asarray(lines, np.int64), extra)
    return ev, problems


def _header_problems(where: str, header: list, hline: int, delim: str) -> list[str]:
    """Problems of the header row: unnamed or repeated columns, required ones missing."""
    problems = []
    if any(not c for c in header):
        problems.append(f"{where}, line {hline}: a column has no name (header {header})")
    dup = sorted({c for c in header if c and header.count(c) > 1})
    if dup:
        problems.append(f"{where}, line {hline}: column(s) {dup} appear more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        sep = "tab" if delim == "\t" else "comma"
        problems.append(
            f"{where}, line {hline}: no {' or '.join(f'`{c}`' for c in missing)} "
            f"column ({sep}-separated header has {header}); the file needs a `time` "
            "column (s, session clock) and a `label` column"
        )
    return problems


def _read_row(where: str, cells: list, n_columns: int, ti: int, li: int) -> tuple[float, str] | str:
    """An event row's (time, label), or the problem with it (``where``: file and line)."""
    if len(cells) != n_columns:
        return f"{where}: {len(cells)} cell(s) but the header has {n_columns} column(s)"
    cell = cells[ti].strip()
    try:
        t = float(cell)
    except ValueError:
        return f"{where}, column `time`: {cell!r} is not a number of seconds"
    if not math.isfinite(t):
        return f"{where}, column `time`: {cell!r} is not finite"
    lab = cells[li].strip()
    if not lab:
        return f"{where}, column `label`: empty; every event needs a label"
    if "/" in lab:
        return (
            f"{where}, column `label`: {lab!r} contains '/', which "
            "names groups in HDF5 and NWB files; use another character"
        )
    return t, lab


def _clip(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_LISTED:
        return problems
    return problems[:MAX_LISTED] + [f"... and {len(problems) - MAX_LISTED} more problem(s)"]


def outside_extent(events: Events, extent: tuple[float, float], tol: float = 0.0) -> list[str]:
    """Problems for events outside ``extent`` (s, session clock), naming their lines."""
    lo, hi = extent
    bad = np.flatnonzero((events.time < lo - tol) | (events.time > hi + tol))
    return [
        f"events file {events.path}, line {events.line[i]}, column `time`: "
        f"{events.time[i]:g} s is outside the session ({lo:.3f}-{hi:.3f} s on the session "
        "clock, docs/timing.md)"
        for i in bad
    ]


def read_events(path: str | Path, extent: tuple[float, float] | None = None, tol: float = 0.0) -> Events:
    """Read and check an events file.

    Parameters
    ----------
    path : path
        TSV or CSV (by suffix; otherwise tab if the header has one, else comma) with a
        header row holding ``time`` and ``label``. Blank lines and lines starting with
        ``#`` are skipped; line numbers count them.
    extent : (float, float), optional
        First and last frame time of the session (s, session clock); events outside it
        (by more than ``tol`` s) are errors.

    Raises
    ------
    EventsError
        Listing every bad row by file, line and column.
    """
    ev, problems = _parse(Path(path))
    if ev is not None and extent is not None:
        problems += outside_extent(ev, extent, tol)
    if problems:
        raise EventsError("\n".join(_clip(problems)))
    return ev


def check_events_file(path: str | Path, extent: tuple[float, float] | None = None, tol: float = 0.0) -> list[str]:
    """Every problem :func:`read_events` would raise, as lines (empty when fine)."""
    ev, problems = _parse(Path(path))
    if ev is not None and extent is not None:
        problems += outside_extent(ev, extent, tol)
    return _clip(problems)


# --------------------------------------------------------------------------- session extent


def _extent(video: str, timestamp_file: str | None) -> list[float]:
    """``[first time, last time, median interval]`` (s) of one video, read in full."""
    from .timing import load_timestamp_file, read_container_timestamps

    t = load_timestamp_file(timestamp_file) if timestamp_file is not None else read_container_timestamps(video).times
    return [float(t[0]), float(t[-1]), float(np.median(np.diff(t))) if len(t) > 1 else 0.0]


def session_extent(
    videos: Sequence[str], timestamp_files: Sequence[str] | None = None, cache_dir: str | Path | None = None
) -> tuple[tuple[float, float], float] | None:
    """First and last frame time (s, session clock) of a session, before probing.

    Built as the probe step builds the session clock (docs/timing.md): user timestamp
    files as they are; container timestamps placed back to back. Per video, the first
    and last time and the median interval are cached in ``cache_dir`` by file size and
    modification time. Returns ``((start, end), median_interval)``, or None when a video
    or timestamp file does not exist yet (e.g. the demo's, made by a rule).
    """
    from .timing import session_offsets

    files = list(timestamp_files) if timestamp_files else [None] * len(videos)
    if not all(Path(v).is_file() for v in videos) or not all(f is None or Path(f).is_file() for f in files):
        return None
    cache = Path(cache_dir) / "video_extents.json" if cache_dir else None
    srcs = [f if f is not None else v for v, f in zip(videos, files)]
    pair_of = dict(zip(srcs, zip(videos, files)))  # the file a time comes from -> (video, timestamp file)
    extents = cached_per_file(srcs, cache, lambda src: _extent(*pair_of[src]))
    timings = [SimpleNamespace(start=a, end=b, median_interval=m) for a, b, m in extents]
    sources = ["file" if f is not None else "packets" for f in files]
    offsets = session_offsets(timings, sources)
    starts = [t.start + o for t, o in zip(timings, offsets)]
    ends = [t.end + o for t, o in zip(timings, offsets)]
    return (min(starts), max(ends)), float(np.median([t.median_interval for t in timings]))
