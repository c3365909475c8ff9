"""Stages of the analysis: tracking (``tracking.h5``), spectrograms
(``spectrograms.h5``), TCA per session and per joint group (``tca.h5``) and the
event-aligned rhythms (``events.h5``)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_output, write_provenance
from ..results import read_videos_info
from ._common import _log, _now

# --------------------------------------------------------------------------- tracking


def track_points(
    rois: str | Path,
    videos_info: str | Path,
    timestamps: str | Path,
    videos: Sequence[str],
    output: str | Path,
    *,
    session: str,
    params: Mapping,
    frames_freeze: str | Path | None = None,
):
    """Track a session's seed points through its videos into ``tracking.h5``.

    ``params``: ``tracking`` (the config section, with the session's ``contiguous``)
    and ``video``. Positions are written to the file block by block as tracking goes.

    Returns
    -------
    facerhythm_core.tracking.SessionTracking
    """
    import h5py

    from ..errors import VideoError
    from ..timing import read_timestamps_h5, stream_clocks
    from ..tracking_params import TrackingParams
    from ..tracking_session import load_frames_freeze, track_session, write_tracking_h5

    log = _log("track_points")
    started = _now()
    cfg, vcfg = dict(params["tracking"]), dict(params["video"])
    tparams = TrackingParams.from_config(cfg)
    info = read_videos_info(videos_info)
    videos = [str(p) for p in videos]
    by_path = {str(Path(v["path"]).resolve()): int(v["num_frames"]) for v in info["videos"]}
    try:
        num_frames = [by_path[str(Path(p).resolve())] for p in videos]
    except KeyError as exc:
        raise VideoError(f"{exc} is not listed in {videos_info}; rerun the probe step") from None
    with h5py.File(rois, "r") as f:
        points = f["point_positions"][()].astype(np.float32)
        mask = f["tracking_mask"][()].astype(bool) if "tracking_mask" in f else None
    frozen = load_frames_freeze(frames_freeze, sum(num_frames)) if frames_freeze else None
    contiguous = bool(cfg.get("contiguous") or False)
    log.info(
        "session %s: %d video(s), %d frames, %d points, contiguous=%s, frames_freeze=%s",
        session,
        len(videos),
        sum(num_frames),
        len(points),
        contiguous,
        "none" if frozen is None else f"{int(frozen.sum())} frames",
    )
    log.info("parameters: %s", tparams.to_dict())
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as f:

        def out_factory(key, shape):
            # ~1 MB chunks; positions are written block by block while tracking runs
            rows = int(max(1, min(shape[0], (1 << 20) // (8 * shape[1]))))
            return f.create_dataset(f"points_tracked/{key}", shape=shape, dtype="f4", chunks=(rows, shape[1], 2))

        result = track_session(
            videos,
            points,
            mask,
            tparams,
            num_frames=num_frames,
            contiguous=contiguous,
            idx_start=cfg.get("idx_start", 0),
            frames_freeze=frozen,
            chunk_size=vcfg.get("chunk_size", 128),
            prefetch=vcfg.get("prefetch", 2),
            decode_device=vcfg.get("decode_device", "cpu"),
            device=cfg.get("device", "cpu"),
            out_factory=out_factory,
        )
        clocks = stream_clocks(read_timestamps_h5(timestamps), contiguous, info.get("timing_policy", "resample"))
        write_tracking_h5(f, result, frame_rate=float(info["frame_rate"]), clocks=clocks)
        stats = {
            k: {
                "n_rewinds": r.n_rewinds,
                "rewinds_capped": r.rewinds_capped,
                "frames_processed": r.n_frames_processed,
                "seconds": round(r.seconds, 3),
                "violation_fraction": r.violation_fraction,
            }
            for k, r in result.results.items()
        }
        inputs = [rois, videos_info, timestamps, *videos] + ([frames_freeze] if frames_freeze else [])
        write_provenance(
            f,
            "track_points",
            params={"tracking": cfg, "resolved": tparams.to_dict(), "video": vcfg},
            inputs=[str(p) for p in inputs],
            extra={
                "streams": stats,
                "probe_warnings": info.get("warnings", []),
                "clocks": {k: c["clock"] for k, c in clocks.items()},
            },
            started=started,
        )
    for k, s in stats.items():
        log.info("stream %s: %s", k, s)
    log.info("wrote %s", output)
    return result


# --------------------------------------------------------------------------- spectrograms


def spectrogram(tracking: str | Path, output: str | Path, *, session: str, params: Mapping) -> dict:
    """Variable-Q spectrograms of a session's tracked points (``tracking.h5`` ->
    ``spectrograms.h5``). ``params``: the config's ``spectrogram`` section."""
    from ..spectrogram import SpectrogramParams, compute_session_spectrograms

    log = _log("spectrogram")
    p = SpectrogramParams.from_mapping(dict(params))
    log.info("session %s: spectrograms from %s with %s", session, tracking, p)
    with atomic_output(output) as tmp:
        summary = compute_session_spectrograms(tracking, tmp, p, session=session, log=log)
    log.info("session %s: done in %.2f s -> %s", session, summary["seconds"], output)
    return summary


# --------------------------------------------------------------------------- TCA


def _check_tca_time_bins(spectrograms: str | Path, spec, session: str, cfg: Mapping) -> None:
    """Each spectrogram's time bins against what the TCA needs, in frames of the videos."""
    import h5py

    from ..config import check_tca_time_bins
    from ..io import read_provenance

    with h5py.File(spectrograms, "r") as f:
        prov = read_provenance(f) if "provenance" in f else {}
    params = prov.get("params", {})
    videos = prov.get("extra", {}).get("summary", {}).get("videos", {})
    if not (
        {"win_size_used", "downsample_factor", "padding"} <= set(params)
        and all("num_frames" in videos.get(k, {}) for k in spec.spectrograms)
    ):
        return  # not written by our spectrogram stage; the fit checks the shapes itself
    streams = [(f"spectrogram {k}", videos[k]["num_frames"], a.shape[-1]) for k, a in spec.spectrograms.items()]
    check_tca_time_bins(
        session, streams, cfg, (params["win_size_used"], params["downsample_factor"], params["padding"])
    )


def tca(
    spectrograms: str | Path,
    output: str | Path,
    *,
    session: str,
    params: Mapping,
    videos_info: str | Path | None = None,
):
    """TCA of one session (``spectrograms.h5`` -> ``tca.h5``). ``params``: the config's
    ``tca`` section; with ``videos_info`` (``videos.json``) each decomposition is labelled
    by the video file it stands for.

    Returns
    -------
    facerhythm_core.tca.TCAResult
    """
    import h5py

    from .. import tca as tca_
    from ..device import select_device

    log = _log("tca")
    started = _now()
    cfg = dict(params)
    spec = tca_.load_spectrograms(spectrograms)
    log.info(
        "session %s: %d spectrogram(s) %s",
        session,
        len(spec.spectrograms),
        {k: v.shape for k, v in spec.spectrograms.items()},
    )
    _check_tca_time_bins(spectrograms, spec, session, cfg)
    # the spectrograms were loaded for this only: normalize them in place (memory)
    result = tca_.decompose(
        spec.spectrograms,
        videos=cfg["videos"],
        windows=cfg.get("windows"),
        overwrite_input=True,
        **tca_.options_from_config(cfg, select_device(cfg["device"])),
    )
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["session"] = session
        tca_.write_tca_h5(
            f,
            result,
            frequencies=spec.frequencies,
            times=spec.times,
            point_positions=spec.point_positions,
            time_axes={"session_times": spec.session_times, "gap_fraction": spec.gap_fraction},
        )
        if videos_info is not None:
            from ..streams import label_tca_h5

            log.info(
                "decompositions by video file: %s",
                label_tca_h5(f, [v["path"] for v in read_videos_info(videos_info)["videos"]]),
            )
        write_provenance(
            f,
            "tca",
            params=cfg,
            inputs=[str(spectrograms)],
            extra={"session": session, "engines": {k: d.fit.engine for k, d in result.decompositions.items()}},
            started=started,
        )
    log.info("wrote %s", output)
    return result


def tca_joint(
    spectrograms: Sequence[str | Path], output: str | Path, *, group: str, sessions: Sequence[str], params: Mapping
):
    """Joint TCA of a group of sessions (one ``spectrograms.h5`` each) -> ``tca.h5``.

    Every (session, video) element is concatenated along time (``tca.videos`` other
    than ``stack``), or each session's videos are joined and the sessions stacked on a
    leading ``session`` axis (``tca.videos: stack``). Sessions must share one point set
    and one spectrogram configuration.
    """
    import h5py

    from .. import tca as tca_
    from ..device import select_device
    from ..errors import TCAError

    log = _log("tca_joint")
    started = _now()
    cfg, sessions, paths = dict(params), list(sessions), [str(p) for p in spectrograms]
    if len(paths) != len(sessions):
        raise TCAError(f"joint group {group!r}: {len(sessions)} sessions but {len(paths)} spectrogram files")
    specs = {sid: tca_.load_spectrograms(p) for sid, p in zip(sessions, paths)}
    freqs = [s.frequencies for s in specs.values()]
    if any(f.shape != freqs[0].shape or not np.allclose(f, freqs[0]) for f in freqs[1:]):
        raise TCAError(
            f"joint group {group!r}: sessions have different spectrogram frequencies; "
            "use one spectrogram configuration (fs, f_min, f_max, n_freq_bins) for all"
        )
    mode = "stack" if cfg["videos"] == "stack" else "concatenate"
    log.info(
        "joint group %s (%s): sessions %s",
        group,
        mode,
        {sid: {k: v.shape for k, v in s.spectrograms.items()} for sid, s in specs.items()},
    )
    result = tca_.decompose_joint(
        {sid: s.spectrograms for sid, s in specs.items()},
        mode=mode,
        **tca_.options_from_config(cfg, select_device(cfg["device"])),
    )

    def joint_axis(axis_of):
        """An axis of every element (``session/video``), or per session when stacked."""
        if mode == "stack":  # one time axis per session: its videos' axes, joined
            return {
                sid: np.concatenate([axis_of(s)[k] for k in s.spectrograms])
                for sid, s in specs.items()
                if all(k in axis_of(s) for k in s.spectrograms)
            }
        return {f"{sid}/{k}": t for sid, s in specs.items() for k, t in axis_of(s).items()}

    with atomic_output(output) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["group"] = group
        f.attrs["joint_mode"] = mode
        f.create_dataset("sessions", data=sessions, dtype=h5py.string_dtype())
        tca_.write_tca_h5(
            f,
            result,
            frequencies=freqs[0],
            times=joint_axis(lambda s: s.times),
            point_positions={sid: s.point_positions for sid, s in specs.items()},
            time_axes={
                "session_times": joint_axis(lambda s: s.session_times),
                "gap_fraction": joint_axis(lambda s: s.gap_fraction),
            },
        )
        write_provenance(
            f,
            "tca_joint",
            params=cfg,
            inputs=paths,
            extra={"group": group, "sessions": sessions, "mode": mode, **result.extra},
            started=started,
        )
    log.info("wrote %s", output)
    return result


# --------------------------------------------------------------------------- events


def events(
    events_table: str | Path,
    tca: str | Path,
    spectrograms: str | Path,
    rois: str | Path,
    videos_info: str | Path,
    output: str | Path,
    *,
    session: str,
    params: Mapping,
) -> dict:
    """Rhythms aligned to a session's events (``tca.h5``, ``spectrograms.h5`` ->
    ``events.h5``): event-triggered TCA factors and ROI spectral power.

    ``events_table``: the session's event file; ``params``: the config's ``events``
    section. Returns the summary of
    :func:`facerhythm_core.events.compute_session_events` (``skipped`` lists the events
    left out).
    """
    from ..events import compute_session_events

    log = _log("events")
    with atomic_output(output) as tmp:
        summary = compute_session_events(
            events_table,
            tca,
            spectrograms,
            rois,
            videos_info,
            tmp,
            dict(params),
            session=session,
            log=log,
        )
    log.info("session %s: %d event(s) skipped -> %s", session, len(summary["skipped"]), output)
    return summary
