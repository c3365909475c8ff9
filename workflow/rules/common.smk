# Sessions table, config validation, input functions and wildcard constraints.

import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml
from snakemake.exceptions import WorkflowError

# the installed package (rules/package.smk checked it is there, at this version)
from facerhythm_core.config import check_timestamp_files, read_sessions, validate_config
from facerhythm_core.demo import DEMO_VIDEOS
from facerhythm_core.errors import ConfigError
from facerhythm_core.failures import ROOT_CAUSE, Failure, error_in_log
from facerhythm_core.io import atomic_output
from facerhythm_core.events_table import check_events_file, session_extent
from facerhythm_core.nwb_metadata import check_export, session_metadata


def _load_schema(name):
    # through Snakemake's source cache: this file's folder may be a module's remote source
    with open(workflow.source_path(f"../schemas/{name}")) as fh:
        return yaml.safe_load(fh)


def _reserved_session_ids(results_dir):
    """Session ids that would collide with the workflow's own folders, with the reason."""
    reserved = {"joint": f"{results_dir}/joint/ holds the joint TCAs of `tca.joint`"}
    if Path(results_dir).resolve() == Path.cwd().resolve():
        for d in ("config", "logs", "resources", "workflow", "profiles"):
            reserved[d] = f"results_dir is the working directory, whose {d}/ folder is the workflow's"
    return reserved


def _warn(message):
    # Python warnings raised while Snakemake parses the workflow are not shown
    print(f"facerhythm warning: {message}", file=sys.stderr)


# Validate once at DAG-build time; errors name the key, row or file.
try:
    config.update(validate_config(config, _load_schema("config.schema.yaml")))
    RESULTS = config["results_dir"].rstrip("/")
    SESSIONS = {
        s.session: s
        for s in read_sessions(
            config["sessions"],
            _load_schema("sessions.schema.yaml"),
            config["roi_sets"],
            reserved=_reserved_session_ids(RESULTS),
            warn=_warn,
        )
    }
except ConfigError as exc:
    raise WorkflowError(f"facerhythm configuration error:\n{exc}") from None

JOINT = config["tca"]["joint"]


# Videos on remote storage: a sessions table may name a video by URL (sftp://, s3://,
# https://); Snakemake's storage plugins retrieve it to .snakemake/storage/ before the
# jobs that read it (docs/remote_videos.md). Other inputs stay local files.
REMOTE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path):
    return bool(REMOTE_URL.match(str(path)))


def _register_storage(settings_by_provider):
    """Config `storage`: each provider's settings (as the profile's storage-PROVIDER-KEY
    options, which they override), checked against what the installed plugin takes."""
    from dataclasses import fields

    from snakemake_interface_storage_plugins.registry import StoragePluginRegistry

    problems = []
    for provider, settings in settings_by_provider.items():
        try:
            plugin = StoragePluginRegistry().get_plugin(provider)
        except Exception:
            problems.append(
                f"config storage.{provider}: the Snakemake storage plugin {provider!r} is not "
                f"installed (pip install snakemake-storage-plugin-{provider})"
            )
            continue
        known = {f.name for f in fields(plugin.settings_cls)} if plugin.settings_cls else set()
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            problems.append(
                f"config storage.{provider}: unknown setting(s) {', '.join(unknown)}; "
                f"the {provider} plugin takes: {', '.join(sorted(known))}"
            )
            continue
        workflow.storage_registry.register_storage(provider=provider, **(settings or {}))
    if problems:
        raise WorkflowError("facerhythm configuration error:\n  " + "\n  ".join(problems))


STORAGE = dict(config["storage"])
KEEP_REMOTE_COPIES = STORAGE.pop("keep_local")
_register_storage(STORAGE)


def video_input(path):
    """A video as an input of a job: a URL through its storage plugin (retrieved once,
    kept per config storage.keep_local), a path as it is."""
    return storage(path, keep_local=KEEP_REMOTE_COPIES) if is_remote(path) else path


DEMO_PREFIX = "resources/demo/"


def _is_demo_video(path):
    p = str(path)
    return p.startswith(DEMO_PREFIX) and Path(p).stem in DEMO_VIDEOS and p.endswith(".mp4")


def _cell(s, column):
    """Where a session's cell is, for messages: ' (config/sessions.tsv, line 3, column 'videos')'."""
    return f" ({config['sessions']}, line {s.line}, column {column!r})"


def _file_problem(s, column, what, path):
    """Why a session's input file cannot be used (missing, a folder), or None."""
    p = Path(path)
    if p.is_file():
        return None
    problem = "is a folder, not a file" if p.is_dir() else "not found"
    hint = "; separate folders with a forward slash, not a backslash" if "\\" in path and not p.exists() else ""
    return f"session {s.session!r}: {what} {problem}: {path}{_cell(s, column)}{hint}"


def _remote_problem(s, url):
    """Why a session's remote video cannot be used (no plugin for the URL, server not
    reachable, not there), or None. Asks the storage once (e.g. one HEAD request)."""
    from facerhythm_core.failures import describe_exception

    where = _cell(s, "videos")
    try:
        obj = video_input(url).flags["storage_object"]
    except Exception as exc:
        if "No storage provider found" in str(exc):
            from snakemake_interface_storage_plugins.registry import StoragePluginRegistry

            plugins = ", ".join(sorted(StoragePluginRegistry().plugins))
            return (
                f"session {s.session!r}: no storage plugin handles the video URL {url}{where}; "
                f"check the URL, or install the plugin for it (installed: {plugins or 'none'})"
            )
        obj, error = None, exc
    else:
        try:
            if obj.exists():
                return None
            return f"session {s.session!r}: video not found on remote storage: {url}{where}"
        except Exception as exc:
            error = exc
    why = " ".join(describe_exception(error).split())
    hint = ""
    if "No hostkey for host" in why:  # SFTP checks the server against ~/.ssh/known_hosts
        u = urlparse(url)
        hint = (
            f"; add the server's host key to ~/.ssh/known_hosts, after checking it: "
            f"ssh-keyscan -p {u.port or 22} {u.hostname} >> ~/.ssh/known_hosts"
        )
    return f"session {s.session!r}: cannot reach the video {url}: {why}{where}{hint}"


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
    """Fail before any job starts when an input is missing or a group is wrong.

    Remote videos are asked for once, by the Snakemake process that plans the run (not
    again in each cluster job)."""
    problems = []
    for s in SESSIONS.values():
        if workflow.is_main_process:
            problems += [m for m in (_remote_problem(s, v) for v in s.videos if is_remote(v)) if m]
        checks = [("videos", "video", v) for v in s.videos if not _is_demo_video(v) and not is_remote(v)]
        if s.roi_kind == "file":
            checks.append(("rois", "ROI file", s.roi_ref))
        if s.frames_freeze:
            checks.append(("frames_freeze", "frames_freeze file", s.frames_freeze))
        problems += [m for m in (_file_problem(s, *c) for c in checks) if m]
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
    return [video_input(v) for v in session_of(wildcards).videos]


def session_contiguous(wildcards):
    s = session_of(wildcards)
    if s.contiguous is not None:
        return bool(s.contiguous)
    return bool(config["tracking"]["contiguous"]) if config["tracking"]["contiguous"] is not None else False


def probe_inputs(wildcards):
    s = session_of(wildcards)
    out = {"videos": [video_input(v) for v in s.videos]}
    if s.timestamps:
        out["timestamps"] = list(s.timestamps)
    return out


def roi_inputs(wildcards):
    s = session_of(wildcards)
    out = {"videos_info": f"{RESULTS}/{s.session}/videos.json", "first_video": video_input(s.videos[0])}
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
        "videos": [video_input(v) for v in s.videos],
    }
    if s.frames_freeze:
        out["frames_freeze"] = s.frames_freeze
    return out


def tracking_params(wildcards):
    p = dict(config["tracking"])
    p["contiguous"] = session_contiguous(wildcards)
    return p


# ---------------------------------------------------------------- memory requests
# mem_mb from the input sizes (MB), evaluated when a job starts, i.e. once its input
# exists (a dry run, or a job whose input is still to be made, gets the fallback).
# Measured peaks behind the factors: BENCHMARKS.md, "Trial sessions and hour-long
# sessions"; docs/slurm.md explains the requests.
MEM_BASE_MB = 1000  # interpreter, torch, h5py, numpy: ~450 MB resident, with headroom


def _input_mb(paths):
    """Total size of the input files in MB, or None while one is missing."""
    total = 0
    for p in paths:
        if not Path(p).exists():
            return None
        total += Path(p).stat().st_size
    return total / 2**20


def spectrogram_mem_mb(wildcards, input, attempt):
    """Flat in session length: a video is transformed in memory only while its raw
    spectrogram and tracks fit 512 MiB, else streamed in chunks of points."""
    mb = _input_mb(input)
    extra = 1536 if mb is None else min(1536, 3 * mb)
    return int((MEM_BASE_MB + extra) * attempt)


def tca_mem_mb(wildcards, input, attempt):
    """The spectrograms (float32, stored uncompressed, so ~ the file size) are the
    tensor, normalized in place: 1.25x the input for separate videos; concatenate and
    stack copy the videos into one tensor: 2.25x."""
    mb = _input_mb(input)
    joint = wildcards.get("group") is not None
    if mb is None:
        return (16000 if joint else 8000) * attempt
    videos = "concatenate" if joint else config["tca"]["videos"]
    factor = 1.25 if videos == "separate" else 2.25
    return int((MEM_BASE_MB + factor * mb) * attempt)


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


# ROIs carried over from a template session (rules/rois.smk; docs/alignment.md)


def _session_regex(ids):
    return "|".join(re.escape(i) for i in ids) if ids else "$^"


def template_siblings(s):
    """Other sessions that take their ROIs from the same template (match-search nodes)."""
    return [o.session for o in TEMPLATE_SESSIONS if o.roi_ref == s.roi_ref and o.session != s.session]


def template_roi_inputs(wildcards):
    s = session_of(wildcards)
    out = {
        "videos_info": f"{RESULTS}/{s.session}/videos.json",
        "template_rois": f"{RESULTS}/{s.roi_ref}/rois.h5",
        "template_reference": f"{RESULTS}/{s.roi_ref}/reference_image.npy",
        "reference": f"{RESULTS}/{s.session}/reference_image.npy",
        "first_video": video_input(s.videos[0]),
        "others": [],
    }
    if ALIGNMENT["match_search"]:
        out["others"] = [f"{RESULTS}/{o}/reference_image.npy" for o in template_siblings(s)]
    return out


# figures (rules/report.smk)


def report_targets():
    """Every figure and video, for all sessions and joint groups."""
    out = []
    for s in SESSIONS:
        d = f"{RESULTS}/{s}/figures"
        out += [
            f"{d}/rois.png",
            f"{d}/violations.png",
            f"{d}/displacements.png",
            f"{d}/overlay.mp4",
            f"{d}/spectrograms.png",
            f"{d}/power_spectrum.png",
            f"{d}/tca_components",
            f"{d}/tca_fit",
        ]
    for g in JOINT:
        out += [f"{RESULTS}/joint/{g}/figures/tca_components", f"{RESULTS}/joint/{g}/figures/tca_fit"]
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


#: when this run began: a log written since is this run's
RUN_STARTED = time.time()
STOPPED = "ended without an error message (killed, out of memory, or crashed?)"


def _stage_state(output, log):
    """('done' | 'failed' | 'stopped' | 'not run', Failure or None) of one stage of a session."""
    if output.exists():
        return "done", None
    failure = error_in_log(log)
    if failure is not None:
        return "failed", failure
    if Path(log).is_file() and Path(log).stat().st_mtime >= RUN_STARTED - 1:
        return "stopped", Failure(STOPPED)
    return "not run", None


def _write_summary_table(rows):
    """Write logs/run_summary.tsv whole or not at all; say where it went or why not."""
    try:
        with atomic_output("logs/run_summary.tsv") as tmp:
            tmp.write_text("\n".join(rows) + "\n")
    except OSError as exc:
        return f"could not write logs/run_summary.tsv: {exc.strerror or exc}"
    return "summary in logs/run_summary.tsv"


def _stage_applies(session, stage):
    """Whether a session runs a stage (events need an events file, NWB export the config)."""
    if stage == "events":
        return bool(SESSIONS[session].events)
    if stage == "nwb_export":
        return bool(config["nwb"]["enabled"])
    return True


def _probe_warnings(session):
    """What the probe step found worth knowing (cut-short copies accepted, irregular
    clocks), from videos.json."""
    p = Path(RESULTS) / session / "videos.json"
    try:
        return list(json.loads(p.read_text()).get("warnings", []))
    except (OSError, ValueError):
        return []


def write_run_summary(status):
    """logs/run_summary.tsv: per session and stage, done / failed / stopped / not run, the
    error, and the probe's warnings (timing, cut-short videos) as notes.

    The error is the whole message of the job's last logged error with its root cause
    (facerhythm_core.failures); the terminal gets a FAILED line for each, and a NOTE line
    for each probe warning.
    """
    rows = ["session\tstage\tstatus\tlog\terror\tnotes"]
    failed, notes = [], []
    for s in SESSIONS:
        for stage, name in SUMMARY_STAGES:
            if not _stage_applies(s, stage):
                continue
            log = f"logs/{stage}/{s}.log"
            state, failure = _stage_state(Path(RESULTS) / s / name.format(session=s), log)
            note = ""
            if stage == "probe_videos" and state == "done":
                warns = _probe_warnings(s)
                note = " | ".join(w.replace("\t", " ") for w in warns)
                notes += [f"{s}: {w}" for w in warns]
            rows.append(f"{s}\t{stage}\t{state}\t{log}\t{failure.one_line() if failure else ''}\t{note}")
            if failure is not None:
                failed.append((state.upper(), s, stage, log, failure))
    print(f"facerhythm run {status}: {_write_summary_table(rows)}", file=sys.stderr)
    for state, s, stage, log, failure in failed:
        print(f"  {state} {s} ({stage}): {Failure(failure.message).one_line(400)}  [see {log}]", file=sys.stderr)
        if failure.root_cause:
            print(f"      {ROOT_CAUSE}{failure.root_cause}", file=sys.stderr)
    for n in notes:
        print(f"  NOTE {n}", file=sys.stderr)


def _summary_in_module_mode():
    """Write the run summary also when this workflow runs as a module.

    Snakemake runs the onsuccess/onerror handlers of the main Snakefile only; a module's
    (this workflow deployed with snakedeploy) are ignored. Chain the summary onto the
    deploying workflow's handlers, keeping any that it defined before `use rule`.
    """
    if workflow.modifier.is_main_snakefile():
        return  # the Snakefile's own onsuccess/onerror write it
    if not (hasattr(workflow, "_onsuccess") and hasattr(workflow, "_onerror")):
        _warn("this Snakemake version hides the run hooks: no logs/run_summary.tsv in module mode")
        return

    def chain(previous, status):
        def hook(log):
            previous(log)
            write_run_summary(status)

        return hook

    workflow._onsuccess = chain(workflow._onsuccess, "finished")
    workflow._onerror = chain(workflow._onerror, "ended with errors")


_summary_in_module_mode()


# Events and NWB export (rules/events.smk, rules/nwb.smk).


def events_targets():
    out = []
    for s in EVENT_SESSIONS:
        out += [f"{RESULTS}/{s}/events.h5", f"{RESULTS}/{s}/figures/events.png"]
    return out


def nwb_targets():
    return [f"{RESULTS}/{s}/{s}.nwb" for s in NWB_SESSIONS]


def nwb_inputs(wildcards):
    s = session_of(wildcards)
    d = f"{RESULTS}/{s.session}"
    out = {
        "tracking": f"{d}/tracking.h5",
        "spectrograms": f"{d}/spectrograms.h5",
        "tca": f"{d}/tca.h5",
        "rois": f"{d}/rois.h5",
        "videos_info": f"{d}/videos.json",
        "timestamps": f"{d}/timestamps.h5",
    }
    if s.events:
        out["events"] = s.events
    if s.nwb:
        out["acquisition"] = s.nwb
    return out
