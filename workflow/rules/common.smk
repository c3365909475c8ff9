# Sessions table, config validation, input functions and wildcard constraints.

import json
import re
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

REPO = Path(workflow.basedir).parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from facerhythm_core.config import check_timestamp_files, read_sessions, validate_config  # noqa: E402
from facerhythm_core.demo import DEMO_VIDEOS  # noqa: E402
from facerhythm_core.errors import ConfigError  # noqa: E402
from facerhythm_core.events import check_events_file, session_extent  # noqa: E402
from facerhythm_core.nwb import check_export, session_metadata  # noqa: E402


def _load_schema(name):
    with open(Path(workflow.basedir) / "schemas" / name) as fh:
        return yaml.safe_load(fh)


# Validate once at DAG-build time; errors name the key, row or file.
try:
    config.update(validate_config(config, _load_schema("config.schema.yaml")))
    SESSIONS = {
        s.session: s
        for s in read_sessions(config["sessions"], _load_schema("sessions.schema.yaml"), config["roi_sets"])
    }
except ConfigError as exc:
    raise WorkflowError(f"facerhythm configuration error:\n{exc}") from None

RESULTS = config["results_dir"].rstrip("/")
JOINT = config["tca"]["joint"]
DEMO_PREFIX = "resources/demo/"


def _is_demo_video(path):
    p = str(path)
    return p.startswith(DEMO_PREFIX) and Path(p).stem in DEMO_VIDEOS and p.endswith(".mp4")


def _check_events(s):
    """Problems with a session's events file: its rows, and (when the videos exist) that
    every event lies inside the session."""
    if not s.events:
        return []
    if not Path(s.events).is_file():
        return [f"session {s.session!r}: events file not found: {s.events}"]
    try:
        found = session_extent(s.videos, s.timestamps, cache_dir=".snakemake/facerhythm")
    except Exception:  # a broken video or timestamps file is reported on its own
        found = None
    extent, tol = found if found else (None, 0.0)
    return [f"session {s.session!r}: {p}" for p in check_events_file(s.events, extent, tol)]


def _check_inputs():
    """Fail before any job starts when an input is missing or a group is wrong."""
    problems = []
    for s in SESSIONS.values():
        for v in s.videos:
            if not _is_demo_video(v) and not Path(v).exists():
                problems.append(f"session {s.session!r}: video not found: {v}")
        if s.roi_kind == "file" and not Path(s.roi_ref).exists():
            problems.append(f"session {s.session!r}: ROI file not found: {s.roi_ref}")
        if s.frames_freeze and not Path(s.frames_freeze).exists():
            problems.append(f"session {s.session!r}: frames_freeze file not found: {s.frames_freeze}")
        problems += check_timestamp_files(s, cache_dir=".snakemake/facerhythm")
        problems += _check_events(s)
    problems += check_export(SESSIONS.values(), config["nwb"])
    for group, members in JOINT.items():
        for m in members:
            if m not in SESSIONS:
                problems.append(f"tca.joint group {group!r}: session {m!r} is not in the sessions table")
        if len(set(members)) != len(members):
            problems.append(f"tca.joint group {group!r} lists a session twice")
    if problems:
        raise WorkflowError("facerhythm input error:\n  " + "\n  ".join(problems))


_check_inputs()


wildcard_constraints:
    session="|".join(re.escape(s) for s in SESSIONS) if SESSIONS else "$^",
    group="[A-Za-z0-9][A-Za-z0-9_.-]*",
    demo="|".join(DEMO_VIDEOS),


def session_of(wildcards):
    return SESSIONS[wildcards.session]


def session_videos(wildcards):
    return list(session_of(wildcards).videos)


def session_contiguous(wildcards):
    s = session_of(wildcards)
    if s.contiguous is not None:
        return bool(s.contiguous)
    return bool(config["tracking"]["contiguous"]) if config["tracking"]["contiguous"] is not None else False


def probe_inputs(wildcards):
    s = session_of(wildcards)
    out = {"videos": list(s.videos)}
    if s.timestamps:
        out["timestamps"] = list(s.timestamps)
    return out


def roi_inputs(wildcards):
    s = session_of(wildcards)
    out = {"videos_info": f"{RESULTS}/{s.session}/videos.json"}
    if s.roi_kind == "file":
        out["roi_file"] = s.roi_ref
    elif s.roi_kind == "template":
        out["template_rois"] = f"{RESULTS}/{s.roi_ref}/rois.h5"
    return out


def tracking_inputs(wildcards):
    s = session_of(wildcards)
    out = {
        "rois": f"{RESULTS}/{s.session}/rois.h5",
        "videos_info": f"{RESULTS}/{s.session}/videos.json",
        "timestamps": f"{RESULTS}/{s.session}/timestamps.h5",
        "videos": list(s.videos),
    }
    if s.frames_freeze:
        out["frames_freeze"] = s.frames_freeze
    return out


def tracking_params(wildcards):
    p = dict(config["tracking"])
    p["contiguous"] = session_contiguous(wildcards)
    return p


def joint_spectrograms(wildcards):
    return [f"{RESULTS}/{m}/spectrograms.h5" for m in JOINT[wildcards.group]]


def all_targets():
    out = []
    for s in SESSIONS:
        out += [
            f"{RESULTS}/{s}/rois.h5",
            f"{RESULTS}/{s}/tracking.h5",
            f"{RESULTS}/{s}/spectrograms.h5",
            f"{RESULTS}/{s}/tca.h5",
        ]
    out += [f"{RESULTS}/joint/{g}/tca.h5" for g in JOINT]
    out += report_targets()
    out += events_targets() + nwb_targets()
    return out


# Stage outputs and their logs, for the run summary.
SUMMARY_STAGES = [
    ("probe_videos", "videos.json"),
    ("rois", "rois.h5"),
    ("track_points", "tracking.h5"),
    ("spectrogram", "spectrograms.h5"),
    ("tca", "tca.h5"),
    ("events", "events.h5"),
    ("nwb_export", "{session}.nwb"),
]


def _stage_applies(session, stage):
    """Whether a session runs a stage (events need an events file, NWB export the config)."""
    if stage == "events":
        return bool(SESSIONS[session].events)
    if stage == "nwb_export":
        return bool(config["nwb"]["enabled"])
    return True


def _last_error(log_path):
    """The last ERROR/Exception line of a log, or ''."""
    p = Path(log_path)
    if not p.exists():
        return ""
    lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if " ERROR " in ln or "Error:" in ln or "Error" in ln.split(":")[0]:
            return ln[:300]
    return ""


def _probe_warnings(session):
    """What the probe step found worth knowing (cut-short copies accepted, irregular
    clocks), from videos.json."""
    p = Path(RESULTS) / session / "videos.json"
    try:
        return list(json.loads(p.read_text()).get("warnings", []))
    except (OSError, ValueError):
        return []


def write_run_summary(status):
    """logs/run_summary.tsv: per session and stage, done / missing, the error if any,
    and the probe's warnings (timing, cut-short videos) as notes."""
    rows = ["session\tstage\tstatus\tlog\terror\tnotes"]
    failed, notes = [], []
    for s in SESSIONS:
        for stage, name in SUMMARY_STAGES:
            if not _stage_applies(s, stage):
                continue
            out = Path(RESULTS) / s / name.format(session=s)
            log = f"logs/{stage}/{s}.log"
            if out.exists():
                note = ""
                if stage == "probe_videos":
                    warns = _probe_warnings(s)
                    note = " | ".join(w.replace("\t", " ") for w in warns)
                    notes += [f"{s}: {w}" for w in warns]
                rows.append(f"{s}\t{stage}\tdone\t{log}\t\t{note}")
                continue
            err = _last_error(log)
            state = "failed" if err else "not run"
            if err:
                failed.append(f"{s} ({stage}): {err}  [see {log}]")
            rows.append(f"{s}\t{stage}\t{state}\t{log}\t{err}\t")
    Path("logs").mkdir(exist_ok=True)
    Path("logs/run_summary.tsv").write_text("\n".join(rows) + "\n")
    print(f"facerhythm run {status}: summary in logs/run_summary.tsv", file=sys.stderr)
    for f in failed:
        print(f"  FAILED {f}", file=sys.stderr)
    for n in notes:
        print(f"  NOTE {n}", file=sys.stderr)
