"""The stage API: one function per workflow rule, from input paths to finished outputs.

Each function takes paths and a parameter mapping (the config section the rule passes),
does the whole stage (reading, the science, provenance, and writing every output
under a temporary name renamed on success, :func:`facerhythm_core.io.atomic_output`) and
returns a small summary. The workflow's scripts only unpack ``snakemake.*`` and call
one of these; benchmarks and notebooks call them directly.

Progress goes to the ``facerhythm.<stage>`` loggers.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .io import atomic_output, write_provenance


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _log(stage: str) -> logging.Logger:
    return logging.getLogger(f"facerhythm.{stage}")


def read_videos_json(path: str | Path) -> dict:
    """``videos.json`` as written by :func:`probe_videos`."""
    with open(path) as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- demo


def demo_video(name: str, video_out: str | Path, truth_out: str | Path) -> dict:
    """Render one bundled demo video (:data:`facerhythm_core.demo.DEMO_VIDEOS`) and its
    ground truth JSON."""
    from .demo import DEMO_VIDEOS, write_demo_video

    with atomic_output(video_out) as tmp:
        truth = write_demo_video(tmp, **DEMO_VIDEOS[name])
    truth["path"] = str(video_out)
    with atomic_output(truth_out) as tmp:
        tmp.write_text(json.dumps(truth, indent=1))
    _log("demo_video").info("wrote %s: %d frames at %.1f fps", video_out, truth["n_frames"], truth["fps"])
    return truth


# --------------------------------------------------------------------------- probe


def probe_videos(
    videos: Sequence[str],
    info_out: str | Path,
    timestamps_out: str | Path,
    *,
    session: str,
    params: Mapping,
    timestamps: Sequence[str] | None = None,
):
    """Probe a session's videos: frame counts, rate, size and clock; fail early on bad input.

    Parameters
    ----------
    videos : sequence of path
    info_out, timestamps_out : path
        ``videos.json`` and ``timestamps.h5``.
    session : str
    params : mapping
        ``fps`` (the session's override or None), ``contiguous``, ``frames_freeze``
        (path or None) and the config sections ``video``, ``spectrogram``, ``tca``.
    timestamps : sequence of path, optional
        The session's user timestamp files, one per video.

    Returns
    -------
    facerhythm_core.video.SessionVideos
    """
    from .config import check_vqt_window
    from .errors import ConfigError
    from .timing import write_timestamps_h5
    from .freeze import load_frames_freeze
    from .video import probe_session

    log = _log("probe_videos")
    vcfg = params["video"]
    info = probe_session(
        list(videos),
        fps_override=params.get("fps"),
        fps_clamp=vcfg["fps_clamp"],
        max_fps_spread=vcfg["max_fps_spread"],
        timestamp_files=list(timestamps) if timestamps else None,
        timing=vcfg["timing"],
        allow_truncated=vcfg["allow_truncated"],
        contiguous=params["contiguous"],
        log=log,
    )
    for v in info.videos:
        log.info(
            "%s: %d frames, %.4f fps, %dx%d, %s %s; clock %s (%s)",
            v.path,
            v.num_frames,
            v.fps,
            v.width,
            v.height,
            v.codec,
            v.pixel_format,
            v.clock,
            v.timing["source"],
        )
    log.info(
        "session frame rate %.4f Hz, %d frames in %d video(s), session clock %.3f-%.3f s",
        info.frame_rate,
        info.num_frames_total,
        len(info.videos),
        info.times[0][0],
        info.times[-1][-1],
    )
    # cheap early checks, so a short video fails here and not after tracking; a resampled
    # video has as many samples as its grid at the session rate
    n_samples = [
        v.num_frames if v.clock != "resample" else int((t[-1] - t[0]) * info.frame_rate + 1e-9) + 1
        for v, t in zip(info.videos, info.times)
    ]
    spec = params["spectrogram"]
    streams = (n_samples, info.frame_rate, spec, params["contiguous"], session, [v.path for v in info.videos])
    w = check_vqt_window(*streams)
    log.info("spectrogram window %d samples: every tracked stream is long enough", w)
    if spec["padding"] == "same" and min(n_samples) < w:
        log.warning(
            "session %s: a video is shorter than the spectrogram window (%d samples); its "
            "lowest frequencies are computed mostly from zero padding",
            session,
            w,
        )
    if params.get("frames_freeze"):  # its frame ranges against the frames now known
        frozen = load_frames_freeze(params["frames_freeze"], info.num_frames_total)
        log.info(
            "frames_freeze %s: %d of %d frames frozen",
            params["frames_freeze"],
            int(frozen.sum()),
            info.num_frames_total,
        )
    try:  # only the tca step needs this, and it may not be a target: warn here, it fails there
        check_vqt_window(*streams, tca=params["tca"])
    except ConfigError as exc:
        log.warning("the tca step will fail on this session: %s", exc)
    with atomic_output(timestamps_out) as tmp:
        write_timestamps_h5(
            tmp,
            info.times,
            [v.path for v in info.videos],
            [v.clock for v in info.videos],
            [v.timing["source"] for v in info.videos],
        )
    with atomic_output(info_out) as tmp:
        tmp.write_text(json.dumps(info.to_dict(), indent=1))
    return info


# --------------------------------------------------------------------------- ROIs


def reference_image(
    videos: Sequence[str], videos_info: str | Path, output: str | Path, *, session: str, params: Mapping
) -> np.ndarray:
    """A session's reference image for ROI transfer (mean of its quietest frames, CLAHE),
    saved as a float32 ``.npy``. ``params``: the config sections ``alignment`` and
    ``video``."""
    from .alignment import reference_image_from_videos

    log = _log("reference_image")
    cfg = params["alignment"]
    info = read_videos_json(videos_info)
    log.info(
        "reference image of %s from %s at %.4f Hz (ds_factor %d, keep %.3g %% quietest, max_frames %s)",
        session,
        list(videos),
        info["frame_rate"],
        cfg["ds_factor"],
        cfg["ptile_keep"],
        cfg["max_frames"],
    )
    image, details = reference_image_from_videos(
        list(videos),
        info["frame_rate"],
        ds_factor=cfg["ds_factor"],
        ptile_keep=cfg["ptile_keep"],
        max_frames=cfg["max_frames"],
        clip_limit=cfg["clip_limit"],
        grid_size=cfg["grid_size"],
        vqt_params=cfg["vqt"],
        chunk_size=params["video"]["chunk_size"],
    )
    for p, idx in details["frames_kept"].items():
        log.info("%s: %d frames scored, %d kept", p, details["frames_scored"][p], len(idx))
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, image.astype(np.float32), allow_pickle=False)
    log.info("wrote %s (%dx%d)", output, image.shape[1], image.shape[0])
    return image


def rois(
    videos_info: str | Path,
    first_video: str | Path,
    rois_out: str | Path,
    example_out: str | Path,
    *,
    params: Mapping,
    roi_file: str | Path | None = None,
):
    """A session's ROIs from an ROI file or config polygons: masks, seed points, tracking
    mask (``rois.h5``) and the example frame (PNG, from ``first_video``).

    ``params``: ``source`` (the sessions table's ``rois`` cell), ``polygons`` (for
    ``config:NAME``) and ``rois`` (the config section).
    """
    from .rois import build_session_rois

    info = read_videos_json(videos_info)
    cfg = params["rois"]
    roi_set, tracking_mask = build_session_rois(
        source=params["source"],
        frame_shape=(info["height"], info["width"]),
        first_video=first_video,
        roi_file=roi_file,
        polygons=params["polygons"],
        point_rois=cfg["point_rois"],
        tracking_rois=cfg["tracking_rois"],
        point_spacing=cfg["point_spacing"],
        use_file_points=cfg["use_file_points"],
        flip=cfg["flip_lr"],
    )
    inputs = [p for p in [roi_file, first_video] if p]
    _write_rois(
        roi_set,
        tracking_mask,
        rois_out,
        example_out,
        {"source": params["source"], **cfg},
        inputs,
        cfg["point_spacing"],
        params["source"],
    )
    return roi_set, tracking_mask


def rois_from_template(
    videos_info: str | Path,
    first_video: str | Path,
    template_rois: str | Path,
    template_reference: str | Path,
    reference: str | Path,
    rois_out: str | Path,
    example_out: str | Path,
    qc_out: str | Path,
    *,
    session: str,
    params: Mapping,
    others: Mapping[str, str] | None = None,
    failed_qc: str | Path | None = None,
):
    """Warp the template session's ROIs onto this session (docs/alignment.md).

    Writes ``rois.h5`` (with an ``alignment`` group: the warp), the example frame and
    the registration QC figure (the example frame from ``first_video``). ``params``:
    ``source``, ``template`` (its session id), ``rois`` and ``alignment`` (config sections). ``others``: sibling
    sessions' reference images for the match search, name -> path. ``failed_qc``: where
    the QC figure goes when the check fails (the job's outputs are deleted then).

    Raises
    ------
    ROIError
        The alignment fails its quality check (``alignment.on_failure: error``), the
        reference image does not fit the videos, or the warped mask is empty.
    """
    from . import alignment as al
    from .errors import ROIError
    from .rois import load_rois_h5, resolve_tracking_mask
    from .video import read_frame

    log = _log("rois_from_template")
    info = read_videos_json(videos_info)
    frame_shape = (info["height"], info["width"])
    cfg, acfg, template = params["rois"], params["alignment"], params["template"]
    others = dict(others or {})
    tmpl_rois = load_rois_h5(template_rois)
    im_t = np.load(template_reference, allow_pickle=False)
    im_s = np.load(reference, allow_pickle=False)
    ims_others = {name: np.load(p, allow_pickle=False) for name, p in others.items()}
    if im_s.shape != frame_shape:
        raise ROIError(f"reference image of {session!r} is {im_s.shape}, videos are {frame_shape}")
    result = al.align_to_template(
        im_t,
        im_s,
        ims_others,
        template_name=template,
        name=session,
        method=acfg["method"],
        constraint=acfg["constraint"],
        nonrigid=acfg["nonrigid"],
        z_threshold=acfg["z_threshold"],
        radius_in=acfg["radius_in"],
        radius_out=acfg["radius_out"],
        order=acfg["order"],
        match_search=acfg["match_search"],
        all_to_all=acfg["all_to_all"],
        init_phase_correlation=acfg["init_phase_correlation"],
        bandpass=acfg["bandpass"],
    )
    m = result.registration.matrix
    log.info(
        "template %s -> %s: z direct %.2f, final %.2f, weakest step %.2f (threshold %g); path %s; matrix %s",
        template,
        session,
        result.z_direct,
        result.z_final,
        result.z_path,
        acfg["z_threshold"],
        " -> ".join(result.path),
        np.array2string(m, precision=4).replace("\n", ""),
    )
    title = f"{template} -> {session}"
    if not result.aligned:
        msg = (
            f"session {session!r}: alignment to template {template!r} failed the quality check "
            f"(z {result.z_final:.2f}, path {' -> '.join(result.path)} weakest step "
            f"{result.z_path:.2f}; alignment.z_threshold {acfg['z_threshold']}). Check "
            f"{qc_out}; try alignment.constraint 'affine', alignment.method "
            "'phase_correlation', more sessions for the match search, or another template"
        )
        if acfg["on_failure"] == "error":
            if failed_qc is not None:
                fig = al.qc_figure(
                    im_t,
                    im_s,
                    tmpl_rois,
                    al.warp_rois(tmpl_rois, result.registration, frame_shape),
                    result,
                    acfg["z_threshold"],
                    title,
                )
                fig.savefig(failed_qc, dpi=100)
                msg = msg.replace(str(qc_out), str(failed_qc))
            raise ROIError(msg)
        log.warning(msg)
    roi_set = al.warp_rois(tmpl_rois, result.registration, frame_shape)
    if roi_set.point_positions is None or not len(roi_set.point_positions):
        raise ROIError(f"template {template!r} rois.h5 has no seed points to carry over")
    h, w = frame_shape
    pts = roi_set.point_positions
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
    if outside.any():
        log.warning(
            "%d of %d warped seed points fall outside the %dx%d frame; clipped to its edge "
            "(points are kept so that sessions share one point set)",
            int(outside.sum()),
            len(pts),
            w,
            h,
        )
        roi_set.point_positions = np.clip(pts, 0, [w - 1, h - 1]).astype(np.float32)
    roi_set.example_image = read_frame(first_video, 0)
    mask = resolve_tracking_mask(roi_set, cfg["tracking_rois"])
    if not mask.any():
        raise ROIError(f"session {session!r}: the warped tracking mask is empty")
    with atomic_output(qc_out) as tmp:
        al.qc_figure(im_t, im_s, tmpl_rois, roi_set, result, acfg["z_threshold"], title).savefig(tmp, dpi=100)
    extra = {
        "template": template,
        "z_direct": result.z_direct,
        "z_final": result.z_final,
        "z_path": result.z_path,
        "path": result.path,
        "aligned": result.aligned,
        "n_points_clipped": int(outside.sum()),
    }
    inputs = [template_rois, template_reference, reference, *others.values(), first_video]
    _write_rois(
        roi_set,
        mask,
        rois_out,
        example_out,
        {"source": params["source"], **cfg, "alignment": acfg},
        inputs,
        cfg["point_spacing"],
        params["source"],
        alignment=(result, extra),
    )
    return roi_set, mask


def _write_rois(
    roi_set, tracking_mask, rois_out, example_out, params, inputs, point_spacing, source, alignment=None
) -> None:
    import h5py

    from .rois import save_example_png, save_rois_h5

    _log("rois").info(
        "%d ROI(s) %s; %d seed points; tracking mask %d px",
        len(roi_set.masks),
        roi_set.names,
        len(roi_set.point_positions),
        int(tracking_mask.sum()),
    )
    extra = None
    with atomic_output(rois_out) as tmp:
        save_rois_h5(
            tmp,
            roi_set,
            extra={"tracking_mask": tracking_mask},
            attrs={"point_spacing": point_spacing, "source": source},
        )
        with h5py.File(tmp, "a") as f:
            if alignment is not None:
                # the warp, so that anything drawn on the template can be carried over later
                result, extra = alignment
                g = f.create_group("alignment")
                g.create_dataset("matrix", data=result.registration.matrix)
                if result.registration.flow is not None:
                    g.create_dataset("flow", data=result.registration.flow, compression="gzip", compression_opts=1)
                for k, v in extra.items():
                    g.attrs[k] = json.dumps(v) if isinstance(v, list) else v
            write_provenance(f, "rois", params=params, inputs=[str(p) for p in inputs], extra=extra)
    with atomic_output(example_out) as tmp:
        save_example_png(tmp, roi_set, tracking_mask)


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

    from .errors import VideoError
    from .timing import read_timestamps_h5, stream_clocks
    from .tracking_params import TrackingParams
    from .tracking_session import load_frames_freeze, track_session, write_tracking_h5

    log = _log("track_points")
    started = _now()
    cfg, vcfg = dict(params["tracking"]), dict(params["video"])
    tparams = TrackingParams.from_config(cfg)
    info = read_videos_json(videos_info)
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
    from .spectrogram import SpectrogramParams, compute_session_spectrograms

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

    from .config import check_tca_time_bins
    from .io import read_provenance

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

    from . import tca as tca_
    from .device import select_device

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
            from .streams import label_tca_h5

            log.info(
                "decompositions by video file: %s",
                label_tca_h5(f, [v["path"] for v in read_videos_json(videos_info)["videos"]]),
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

    from . import tca as tca_
    from .device import select_device
    from .errors import TCAError

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
