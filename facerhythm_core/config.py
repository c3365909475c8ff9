"""Config and sessions-table validation against JSON schemas, with defaults filled in."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, FaceRhythmWarning
from .tables import Table, TableRow, close_column, read_table


def _validator_with_defaults():
    from jsonschema import Draft7Validator, validators

    validate_props = Draft7Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(Draft7Validator, {"properties": set_defaults})


def _where(err) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    return path or "(top level)"


def _problem(err, where: str) -> str:
    """A schema violation as ``where: problem``; a failed pattern adds the key's description."""
    desc = err.schema.get("description", "") if isinstance(err.schema, Mapping) else ""
    note = f" ({desc.strip()})" if err.validator == "pattern" and desc else ""
    return f"{where}: {err.message}{note}"


def non_finite_numbers(obj: Any, path: tuple = ()) -> list[tuple[str, float]]:
    """Every NaN or infinite float in a nested mapping/list, as (``key.path``, value)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [(".".join(map(str, path)) or "(top level)", obj)]
    if isinstance(obj, Mapping):
        return [hit for k, v in obj.items() for hit in non_finite_numbers(v, path + (k,))]
    if isinstance(obj, (list, tuple)):
        return [hit for i, v in enumerate(obj) for hit in non_finite_numbers(v, path + (i,))]
    return []


def validate_config(config: Mapping, schema: Mapping, source: str = "config") -> dict:
    """Validate ``config`` against ``schema`` and return a copy with defaults filled in.

    Every number must also be finite: JSON schema lets NaN and infinity (YAML ``.nan``,
    ``.inf``; ``--config key=nan``) through every bound.

    Raises
    ------
    ConfigError
        Listing every violation as ``key.path: problem``.
    """
    cfg = copy.deepcopy(dict(config or {}))
    validator = _validator_with_defaults()(schema)
    problems = [(list(e.absolute_path), _problem(e, _where(e))) for e in validator.iter_errors(cfg)]
    problems += [
        (where.split("."), f"{where}: {value!r} is not a finite number (NaN and infinity are not allowed)")
        for where, value in non_finite_numbers(config)
    ]
    if problems:
        lines = [f"  {msg}" for _, msg in sorted(problems, key=lambda p: [str(k) for k in p[0]])]
        raise ConfigError(f"{source} breaks the schema:\n" + "\n".join(lines))
    # a second pass fills defaults inside objects that the first pass created
    cfg2 = copy.deepcopy(cfg)
    list(validator.iter_errors(cfg2))
    _resolve_stage_devices(cfg2)
    return cfg2


def _resolve_stage_devices(cfg: dict) -> None:
    """A torch stage's ``device`` left null takes the top-level ``device``."""
    for section in ("spectrogram", "tca"):
        sec = cfg.get(section)
        if isinstance(sec, dict) and "device" in sec and sec["device"] is None:
            sec["device"] = cfg.get("device", "auto")


@dataclass(frozen=True)
class Session:
    """One row of the sessions table."""

    session: str
    videos: tuple[str, ...]
    rois: str
    fps: float | None = None
    contiguous: bool | None = None
    frames_freeze: str | None = None
    #: the user's per-frame timestamp files, one per video (``timestamps`` column)
    timestamps: tuple[str, ...] | None = None
    #: the session's events file (``events`` column; docs/events.md)
    events: str | None = None
    #: the session's NWB file from acquisition (``nwb`` column; docs/nwb.md)
    nwb: str | None = None
    #: ISO 8601 start of the session with its time zone (NWB export)
    session_start_time: str | None = None
    #: other columns of the row (kept, not used), column name -> cell text
    extra: dict = field(default_factory=dict, compare=False)
    #: line of the row in the sessions table, as an editor shows it
    line: int | None = field(default=None, compare=False)

    @property
    def roi_kind(self) -> str:
        """'file', 'config' or 'template'."""
        if self.rois.startswith("config:"):
            return "config"
        if self.rois.startswith("template:"):
            return "template"
        return "file"

    @property
    def roi_ref(self) -> str:
        """The path, the roi_sets name, or the template session id."""
        return self.rois.split(":", 1)[1] if self.roi_kind != "file" else self.rois


_BOOL = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _warn(message: str) -> None:
    warnings.warn(message, FaceRhythmWarning, stacklevel=4)


def _check_header(table: Table, schema: Mapping, warn: Callable[[str], None] = _warn) -> list[str]:
    """Known columns present; errors for missing required ones, ``warn`` for near misses."""
    known = list(schema.get("properties", {}))
    present = [c for c in table.columns if c]
    absent = [k for k in known if k not in present]
    extra = [c for c in present if c not in known]
    guesses = {c: close_column(c, absent) for c in extra}
    missing = [k for k in schema.get("required", []) if k not in present]
    if missing:
        hints = [f"{c!r} for {g!r}?" for c, g in guesses.items() if g in missing]
        raise ConfigError(
            f"{table.where(table.header_line)} (the header): missing required "
            f"column(s) {missing}; the header has {present}"
            + (f" (a misspelling: {', '.join(hints)})" if hints else "")
        )
    for c, g in guesses.items():
        if g is not None:
            warn(
                f"{table.where(table.header_line)} (the header): column {c!r} is not a known "
                f"column and is ignored; did you mean {g!r}?"
            )
    return [k for k in known if k in present]


def _types(prop: Mapping) -> list[str]:
    t = prop.get("type", "string")
    return [t] if isinstance(t, str) else list(t)


def cell_value(text: str, name: str, prop: Mapping, where: str) -> Any:
    """Convert one non-empty cell to the type its schema property asks for.

    Numbers must be finite (``nan``/``inf`` are rejected).

    Parameters
    ----------
    text : str
        The stripped, non-empty cell.
    name : str
        Column name, for messages.
    prop : mapping
        The column's schema property (its ``type`` decides the conversion).
    where : str
        File, line and column, for messages.

    Raises
    ------
    ConfigError
        Naming ``where`` (file, line and column), the value and the expected type.
    """
    types = _types(prop)
    if "boolean" in types:
        if text.lower() not in _BOOL:
            raise ConfigError(f"{where}: {name} must be true or false, got {text!r}")
        return _BOOL[text.lower()]
    if "integer" in types or "number" in types:
        try:
            value = int(text) if "number" not in types else float(text)
        except ValueError:
            kind = "an integer" if "number" not in types else "a number"
            comma = " (use a decimal point, not a comma)" if "," in text else ""
            raise ConfigError(f"{where}: {name} must be {kind}, got {text!r}{comma}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {text!r}")
        return value
    return text


def _schema_problems(rec: dict, validator) -> list[str]:
    return [
        _problem(e, f"column {e.absolute_path[0]!r}" if e.absolute_path else "row") for e in validator.iter_errors(rec)
    ]


def _row_record(row: TableRow, known: list[str], table: Table, schema: Mapping, validator) -> dict:
    """The row's known cells, converted and checked against the schema."""
    props = schema.get("properties", {})
    rec = {}
    for k in known:
        if row.cells.get(k):
            rec[k] = cell_value(row.cells[k], k, props[k], table.where(row.line, k))
    missing = [k for k in schema.get("required", []) if k not in rec]
    if missing:
        raise ConfigError(
            f"{table.where(row.line)}: required column(s) {missing} empty; every session needs a value there"
        )
    problems = _schema_problems(rec, validator)
    if problems:
        raise ConfigError(f"{table.where(row.line)}: " + "; ".join(problems))
    return rec


def _check_session_ids(sessions: list[Session], table: Table, reserved: Mapping[str, str]) -> None:
    """Unique ids, also ignoring case (case-insensitive file systems), and none reserved."""
    seen: dict[str, Session] = {}
    for s in sessions:
        why = next((w for r, w in reserved.items() if r.casefold() == s.session.casefold()), None)
        if why is not None:
            raise ConfigError(
                f"{table.where(s.line, 'session')}: session id {s.session!r} is reserved: {why}; rename the session"
            )
        other = seen.get(s.session.casefold())
        if other is not None and other.session == s.session:
            raise ConfigError(
                f"{table.path}: session id {s.session!r} appears on lines {other.line} and {s.line}; ids must be unique"
            )
        if other is not None:
            raise ConfigError(
                f"{table.path}: session ids {other.session!r} (line {other.line}) and "
                f"{s.session!r} (line {s.line}) differ only in letter case; they would "
                "share one results folder on macOS and Windows, so ids must be unique "
                "ignoring case"
            )
        seen[s.session.casefold()] = s


def _session_from(rec: dict, row: TableRow, extra: dict, where: str) -> Session:
    """A :class:`Session` from a checked row; every field the row has a column for is set."""
    videos = tuple(v.strip() for v in rec["videos"].split(";") if v.strip())
    if not videos:
        raise ConfigError(f"{where}: no video path in `videos`")
    twice = sorted({v for v in videos if videos.count(v) > 1})
    if twice:
        raise ConfigError(
            f"{where}: session {rec['session']!r} lists {twice} more than once; "
            "list each video of the session once, in recording order"
        )
    stamps = None
    if rec.get("timestamps"):
        stamps = tuple(v.strip() for v in rec["timestamps"].split(";"))
        if len(stamps) != len(videos) or not all(stamps):
            raise ConfigError(
                f"{where}: `timestamps` names {len(stamps)} file(s) for "
                f"{len(videos)} video(s); give one file per video, separated by ';' "
                "in the same order as `videos`"
            )
    names = {f.name for f in fields(Session)} - {"videos", "extra", "line", "timestamps"}
    return Session(
        videos=videos, extra=extra, line=row.line, timestamps=stamps, **{k: v for k, v in rec.items() if k in names}
    )


def read_sessions(
    path: str | Path,
    schema: Mapping,
    roi_sets: Mapping | None = None,
    reserved: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Session]:
    """Read and validate the sessions table.

    The table is read by :func:`~facerhythm_core.tables.read_table` (spreadsheet output
    included). Every known column (the schema's properties) is converted by
    :func:`cell_value` and checked against ``schema``; other columns are kept in
    :attr:`Session.extra` and otherwise ignored, with a warning when one looks like a
    misspelled known column that is absent. Session ids must be unique (also ignoring
    case) and not in ``reserved``; ``config:NAME`` ROI sources must exist in
    ``roi_sets`` and ``template:ID`` must name another session.

    Parameters
    ----------
    path : path
    schema : mapping
        ``workflow/schemas/sessions.schema.yaml``.
    roi_sets : mapping, optional
        Config ``roi_sets``.
    reserved : mapping of str -> str, optional
        Session ids the workflow uses itself, mapped to the reason.
    warn : callable, optional
        Called with each warning's text; default: :func:`warnings.warn` with a
        :class:`~facerhythm_core.errors.FaceRhythmWarning`.

    Raises
    ------
    ConfigError
        Naming the file, line (as an editor shows it) and column.
    """
    if not Path(path).exists():
        raise ConfigError(f"sessions table not found: {path} (set `sessions:` in the config)")
    table = read_table(path, "sessions table", list(schema.get("properties", {})))
    known = _check_header(table, schema, warn or _warn)
    validator = _validator_with_defaults()(schema)
    sessions: list[Session] = []
    for row in table.rows:
        rec = _row_record(row, known, table, schema, validator)
        extra = {c: v for c, v in row.cells.items() if c not in known}
        sessions.append(_session_from(rec, row, extra, table.where(row.line, "videos")))
    if not sessions:
        raise ConfigError(f"{table.path} has a header but no session rows")
    _check_session_ids(sessions, table, reserved or {})
    _check_roi_sources(sessions, table, roi_sets or {})
    return sessions


def _check_roi_sources(sessions: list[Session], table: Table, roi_sets: Mapping) -> None:
    """``config:NAME`` names a set in ``roi_sets``; ``template:ID`` names another session."""
    ids = {s.session for s in sessions}
    for s in sessions:
        where = table.where(s.line, "rois")
        if s.roi_kind == "config" and s.roi_ref not in roi_sets:
            raise ConfigError(
                f"{where}: session {s.session!r}: ROI source {s.rois!r} names no set "
                f"in config `roi_sets` (have: {sorted(roi_sets)})"
            )
        if s.roi_kind == "template":
            if s.roi_ref == s.session:
                raise ConfigError(f"{where}: session {s.session!r} names itself as its ROI template")
            if s.roi_ref not in ids:
                raise ConfigError(
                    f"{where}: session {s.session!r}: template session {s.roi_ref!r} is not in the sessions table"
                )
    _check_template_cycles(sessions, table)


def _check_template_cycles(sessions: list[Session], table: Table) -> None:
    """Following ``template:`` links must end at a session with its own ROIs."""
    by_id = {s.session: s for s in sessions}
    for s in sessions:
        path = [s]
        while path[-1].roi_kind == "template":
            nxt = by_id[path[-1].roi_ref]
            if nxt in path:
                loop = path[path.index(nxt) :] + [nxt]
                chain = " -> ".join(f"{x.session!r} (line {x.line})" for x in loop)
                raise ConfigError(
                    f"{table.where(s.line, 'rois')}: template sessions form a loop: "
                    f"{chain}; one of them needs its own ROI file or config: set"
                )
            path.append(nxt)


def _tca_time_need(tca: Mapping) -> tuple[int, str]:
    """Time bins one TCA tensor needs: the largest rank fitted, and 2 to normalise over time."""
    rank = int(tca.get("rank", 1))
    sweep = tca.get("rank_sweep") or {}
    swept = [int(r) for r in sweep.get("ranks") or []] if sweep.get("enabled") else []
    need, why = rank, f"tca.rank {rank}"
    if swept and max(swept) > rank:
        need, why = max(swept), f"tca.rank_sweep.ranks up to {max(swept)}"
    over_time = tca.get("normalize_dim", "time") == "time" and (tca.get("std_divide") or tca.get("mean_subtract"))
    if over_time and need < 2:
        need, why = 2, "normalising over time (tca.std_divide or tca.mean_subtract)"
    return need, why


def _frames_for_bins(bins: int, w: int, ds: int, padding: str) -> int:
    """Fewest samples whose transform has ``bins`` time bins."""
    return (bins - 1) * ds + (w if padding == "valid" else 1)


def _stream_names(num_frames: list[int], contiguous: bool, paths: list[str] | None) -> tuple[list, list]:
    if contiguous:
        return ["all videos (contiguous)"], [sum(num_frames)]
    return list(paths or [f"video {i}" for i in range(len(num_frames))]), list(num_frames)


def check_vqt_window(
    num_frames: list[int],
    frame_rate: float,
    spectrogram: Mapping,
    contiguous: bool,
    session: str,
    paths: list[str] | None = None,
    tca: Mapping | None = None,
) -> int:
    """Fail early when a tracked stream is too short for the spectrogram (or the TCA).

    A stream is each video, or the whole session when tracked contiguously. Under
    'valid' padding it needs at least W samples (one full window); under 'same' at
    least one full time bin (``downsample_factor`` samples, and 2 for one
    displacement), since a shorter one gives a single bin of mostly zero padding.
    With ``tca``, the time bins must also suffice for the TCA
    (:func:`check_tca_time_bins`).

    Parameters
    ----------
    num_frames : list of int
        Frames per video, in order.
    frame_rate : float
        The session's frame rate (the sample rate unless ``spectrogram.fs`` is set).
    spectrogram : mapping
        The config's ``spectrogram`` section.
    contiguous : bool
        Whether the session is tracked as one stream.
    session : str
    paths : list of str, optional
        Video paths, for messages.
    tca : mapping, optional
        The config's ``tca`` section; None skips the TCA check.

    Returns
    -------
    int
        The window length W in samples.

    Raises
    ------
    ConfigError
        Naming the session, the video (or stream), its length, what it needs and the fixes.
    """
    from .vqt import output_length
    from .vqt_filters import default_win_size

    fs = spectrogram.get("fs") or frame_rate
    w = int(spectrogram.get("win_size") or default_win_size(spectrogram["q_low_f"], fs, spectrogram["f_min"]))
    padding, ds = spectrogram.get("padding", "valid"), int(spectrogram.get("downsample_factor", 20))
    names, streams = _stream_names(num_frames, contiguous, paths)
    for name, n in zip(names, streams):
        if padding == "valid" and n < w:
            raise ConfigError(
                f"session {session!r}: {name} has {n} frames ({n / fs:.2f} s at {fs:g} Hz) but the "
                f"spectrogram window is {w} samples ({w / fs:.2f} s = q_low_f / f_min). Use longer "
                "videos, track the session contiguously, raise spectrogram.f_min, lower "
                "spectrogram.q_low_f, or set spectrogram.win_size."
            )
        if padding != "valid" and n < max(2, ds):
            raise ConfigError(
                f"session {session!r}: {name} has {n} frame(s) ({n / fs:.3f} s at {fs:g} Hz), too "
                f"short for a spectrogram: with padding 'same' it needs at least {max(2, ds)} "
                f"frames (one time bin of spectrogram.downsample_factor {ds} samples, and 2 for "
                "one displacement); a shorter one gives a single bin of mostly zero padding. Use "
                "longer videos, track the session contiguously, or lower "
                "spectrogram.downsample_factor."
            )
    if tca is not None:
        check_tca_time_bins(
            session,
            [(name, n, output_length(n, w, ds, padding)) for name, n in zip(names, streams)],
            tca,
            (w, ds, padding),
        )
    return w


def check_tca_time_bins(
    session: str, streams: list[tuple[str, int, int]], tca: Mapping, geometry: tuple[int, int, str]
) -> None:
    """Fail when a TCA tensor has fewer time bins than the TCA needs.

    A tensor's time axis must hold the largest rank fitted (``tca.rank``, or
    ``tca.rank_sweep.ranks``), and 2 bins to normalise over time; it is a stream's
    bins, or the session's sum with ``tca.videos: concatenate`` (doubled with
    ``complex_unfold``). Time windows (``tca.windows``) are checked by the TCA itself.

    Parameters
    ----------
    session : str
    streams : list of (name, frames, time bins)
        Each spectrogram of the session.
    tca : mapping
        The config's ``tca`` section.
    geometry : (W, downsample_factor, padding)
        Of the spectrogram, for the frames needed.

    Raises
    ------
    ConfigError
        Naming the session, the video, its frames and bins, what the TCA needs and the fixes.
    """
    if tca.get("windows") is not None:
        return
    need, why = _tca_time_need(tca)
    unfold = 2 if tca.get("complex_unfold") else 1
    w, ds, padding = geometry
    if tca.get("videos", "separate") == "concatenate":
        streams = [("all videos (tca.videos: concatenate)", sum(s[1] for s in streams), sum(s[2] for s in streams))]
    for name, n, bins in streams:
        if bins * unfold < need:
            frames = _frames_for_bins(-(-need // unfold), w, ds, padding)
            raise ConfigError(
                f"session {session!r}: {name} has {n} frames, which give {bins} spectrogram time "
                f"bin(s) (padding {padding!r}, window {w}, downsample_factor {ds}), but TCA needs "
                f"{need} along time ({why}), i.e. at least {frames} frames. Use longer videos, "
                "lower tca.rank, lower spectrogram.downsample_factor, or join short videos "
                "(tca.videos: concatenate, or contiguous tracking)."
            )


def check_timestamp_files(session: Session, cache_dir: str | Path | None = None) -> list[str]:
    """Problems with a session's user timestamp files, before any job runs.

    Each file must load (finite, strictly increasing seconds) and hold exactly one time
    per decodable frame of its video. Counting frames reads the video's packets (no
    decoding); the count is cached in ``cache_dir`` by file size and modification time,
    so repeated DAG builds do not read the videos again.

    Returns
    -------
    list of str
        One line per problem, naming the session and the file.
    """
    from .timing import load_timestamp_file

    problems: list[str] = []
    for video, stamp in zip(session.videos, session.timestamps or ()):
        try:
            times = load_timestamp_file(stamp)
        except ConfigError as exc:
            problems.append(f"session {session.session!r}: {exc}")
            continue
        if not Path(video).is_file():
            continue  # reported as a missing video
        try:
            n = _decodable_frames(video, cache_dir)
        except Exception as exc:  # a broken video is reported by the probe step
            problems.append(f"session {session.session!r}: cannot count the frames of {video}: {exc}")
            continue
        if len(times) != n:
            problems.append(
                f"session {session.session!r}: timestamps {stamp} has {len(times)} "
                f"times but video {video} has {n} decodable frames; give exactly one "
                "time (s) per frame"
            )
    return problems


def _decodable_frames(video: str | Path, cache_dir: str | Path | None) -> int:
    from .io import cached_per_file
    from .timing import read_container_timestamps

    cache = Path(cache_dir) / "frame_counts.json" if cache_dir else None
    return int(cached_per_file([video], cache, lambda v: len(read_container_timestamps(v).times))[0])
