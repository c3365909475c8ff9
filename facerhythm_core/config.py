"""Config and sessions-table validation against JSON schemas, with defaults filled in."""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


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


def validate_config(config: Mapping, schema: Mapping, source: str = "config") -> dict:
    """Validate ``config`` against ``schema`` and return a copy with defaults filled in.

    Raises
    ------
    ConfigError
        Listing every violation as ``key.path: problem``.
    """
    cfg = copy.deepcopy(dict(config or {}))
    validator = _validator_with_defaults()(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_where(e)}: {e.message}" for e in errors]
        raise ConfigError(f"{source} breaks the schema:\n" + "\n".join(lines))
    # a second pass fills defaults inside objects that the first pass created
    cfg2 = copy.deepcopy(cfg)
    list(validator.iter_errors(cfg2))
    return cfg2


@dataclass(frozen=True)
class Session:
    """One row of the sessions table."""

    session: str
    videos: tuple[str, ...]
    rois: str
    fps: float | None = None
    contiguous: bool | None = None
    frames_freeze: str | None = None
    timestamps: tuple[str, ...] | None = None
    events: str | None = None
    nwb: str | None = None
    session_start_time: str | None = None
    extra: dict = field(default_factory=dict)

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


def _coerce(row: dict, lineno: int, path: str) -> dict:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k is None:
            raise ConfigError(f"{path}, line {lineno}: more cells than header columns "
                              "(is a value containing a tab?)")
        k = k.strip()
        v = "" if v is None else v.strip()
        if v == "":
            continue
        if k == "fps":
            try:
                out[k] = float(v)
            except ValueError:
                raise ConfigError(f"{path}, line {lineno}: fps must be a number, got {v!r}") from None
        elif k == "contiguous":
            if v.lower() not in _BOOL:
                raise ConfigError(f"{path}, line {lineno}: contiguous must be true/false, got {v!r}")
            out[k] = _BOOL[v.lower()]
        else:
            out[k] = v
    return out


def read_sessions(path: str | Path, schema: Mapping, roi_sets: Mapping | None = None) -> list[Session]:
    """Read and validate the sessions table (TSV with a header row).

    Checks every row against ``schema``, unique session ids, that ``config:NAME`` ROI
    sources exist in ``roi_sets`` and that ``template:ID`` names another session.
    Lines starting with ``#`` are comments.

    Raises
    ------
    ConfigError
        Naming the file, line and column.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sessions table not found: {path} (set `sessions:` in the config)")
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"sessions table {path} is empty")
    reader = csv.DictReader(lines, delimiter="\t")
    allowed = set(schema.get("properties", {}))
    unknown = [c for c in (reader.fieldnames or []) if c and c.strip() not in allowed]
    if unknown:
        raise ConfigError(f"sessions table {path}: unknown column(s) {unknown}; allowed: {sorted(allowed)}")
    validator = _validator_with_defaults()(schema)
    sessions: list[Session] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(reader, start=2):
        rec = _coerce(row, i, str(path))
        errs = list(validator.iter_errors(rec))
        if errs:
            msg = "; ".join(f"{_where(e)}: {e.message}" for e in errs)
            raise ConfigError(f"sessions table {path}, line {i}: {msg}")
        sid = rec["session"]
        if sid in seen:
            raise ConfigError(f"sessions table {path}: session id {sid!r} appears on lines "
                              f"{seen[sid]} and {i}; ids must be unique")
        seen[sid] = i
        videos = tuple(v.strip() for v in rec["videos"].split(";") if v.strip())
        if not videos:
            raise ConfigError(f"sessions table {path}, line {i}: no video path in `videos`")
        stamps = None
        if rec.get("timestamps"):
            stamps = tuple(v.strip() for v in rec["timestamps"].split(";"))
            if len(stamps) != len(videos) or not all(stamps):
                raise ConfigError(
                    f"sessions table {path}, line {i}: `timestamps` names {len(stamps)} file(s) "
                    f"for {len(videos)} video(s); give one file per video, separated by ';' in "
                    "the same order as `videos`")
        sessions.append(Session(session=sid, videos=videos, rois=rec["rois"], fps=rec.get("fps"),
                                contiguous=rec.get("contiguous"), frames_freeze=rec.get("frames_freeze"),
                                timestamps=stamps, events=rec.get("events"), nwb=rec.get("nwb"),
                                session_start_time=rec.get("session_start_time")))
    ids = {s.session for s in sessions}
    for s in sessions:
        if s.roi_kind == "config" and s.roi_ref not in (roi_sets or {}):
            raise ConfigError(f"session {s.session!r}: ROI source {s.rois!r} names no set in config "
                              f"`roi_sets` (have: {sorted(roi_sets or {})})")
        if s.roi_kind == "template":
            if s.roi_ref not in ids:
                raise ConfigError(f"session {s.session!r}: template session {s.roi_ref!r} is not in the sessions table")
            if s.roi_ref == s.session:
                raise ConfigError(f"session {s.session!r} names itself as its ROI template")
    return sessions


def check_vqt_window(num_frames: list[int], frame_rate: float, spectrogram: Mapping,
                     contiguous: bool, session: str, paths: list[str] | None = None) -> int:
    """Fail early when a video is shorter than the spectrogram's window.

    With 'valid' padding the VQT needs at least W samples per tracked stream (each
    video, or the whole session when tracked contiguously). Returns W.

    Raises
    ------
    ConfigError
        Naming the session, video, its length and W, and the fixes.
    """
    from .vqt import default_win_size

    fs = spectrogram.get("fs") or frame_rate
    w = spectrogram.get("win_size") or default_win_size(spectrogram["q_low_f"], fs, spectrogram["f_min"])
    if spectrogram.get("padding", "valid") != "valid":
        return int(w)
    streams = [sum(num_frames)] if contiguous else list(num_frames)
    names = ["all videos (contiguous)"] if contiguous else (paths or [f"video {i}" for i in range(len(num_frames))])
    for name, n in zip(names, streams):
        if n < w:
            raise ConfigError(
                f"session {session!r}: {name} has {n} frames ({n / fs:.2f} s at {fs:g} Hz) but the "
                f"spectrogram window is {w} samples ({w / fs:.2f} s = q_low_f / f_min). Use longer "
                "videos, track the session contiguously, raise spectrogram.f_min, lower "
                "spectrogram.q_low_f, or set spectrogram.win_size.")
    return int(w)


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
            problems.append(f"session {session.session!r}: timestamps {stamp} has {len(times)} "
                            f"times but video {video} has {n} decodable frames; give exactly one "
                            "time (s) per frame")
    return problems


def _decodable_frames(video: str | Path, cache_dir: str | Path | None) -> int:
    import json
    import os

    from .timing import read_container_timestamps

    st = os.stat(video)
    key = f"{Path(video).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache = Path(cache_dir) / "frame_counts.json" if cache_dir else None
    known: dict = {}
    if cache is not None and cache.exists():
        try:
            known = json.loads(cache.read_text())
        except ValueError:
            known = {}
    if key not in known:
        known[key] = len(read_container_timestamps(video).times)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, cache)
    return int(known[key])
