"""Stages that turn a session's videos into its inputs: the demo videos, the probe
(``videos.json``, ``timestamps.h5``), the reference image and the ROIs (``rois.h5``,
example frame, ROI-transfer QC figure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_output, write_provenance
from ..results import read_videos_info
from ._common import _log

# --------------------------------------------------------------------------- demo


def demo_video(name: str, video_out: str | Path, truth_out: str | Path) -> dict:
    """Render one bundled demo video (:data:`facerhythm_core.demo.DEMO_VIDEOS`) and its
    ground truth JSON."""
    from ..demo import DEMO_VIDEOS, write_demo_video

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
    from ..config import check_vqt_window
    from ..errors import ConfigError
    from ..timing import write_timestamps_h5
    from ..freeze import load_frames_freeze
    from ..video import probe_session

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
    from ..reference_image import reference_image_from_videos

    log = _log("reference_image")
    cfg = params["alignment"]
    info = read_videos_info(videos_info)
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
    from ..rois import build_session_rois

    info = read_videos_info(videos_info)
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
    from .. import alignment as al
    from ..errors import ROIError
    from ..rois import load_rois_h5, resolve_tracking_mask
    from ..video import read_frame

    log = _log("rois_from_template")
    info = read_videos_info(videos_info)
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

    from ..rois import save_example_png, save_rois_h5

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
