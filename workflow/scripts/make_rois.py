"""Build a session's ROIs: masks, seed points, tracking mask, example frame.

File and config sources are read and rasterised; template sources (`template:ID`)
are the template session's ROIs warped onto this session (docs/alignment.md).
"""

import json
from pathlib import Path

import h5py
import numpy as np

from facerhythm_core.runtime import setup_logging

from facerhythm_core.io import atomic_output, write_provenance
from facerhythm_core.rois import build_session_rois, save_example_png, save_rois_h5

log = setup_logging(snakemake)
with open(snakemake.input.videos_info) as fh:
    info = json.load(fh)
cfg = snakemake.params.rois
frame_shape = (info["height"], info["width"])


def from_template():
    """Warp the template session's ROIs onto this session; write the QC figure."""
    from facerhythm_core import alignment as al
    from facerhythm_core.errors import ROIError
    from facerhythm_core.rois import load_rois_h5, resolve_tracking_mask
    from facerhythm_core.video import read_frame

    acfg = snakemake.params.alignment
    session, template = snakemake.wildcards.session, snakemake.params.template
    tmpl_rois = load_rois_h5(snakemake.input.template_rois)
    im_t = np.load(snakemake.input.template_reference, allow_pickle=False)
    im_s = np.load(snakemake.input.reference, allow_pickle=False)
    others = {name: np.load(p, allow_pickle=False)
              for name, p in zip(snakemake.params.others, snakemake.input.others)}
    if im_s.shape != frame_shape:
        raise ROIError(f"reference image of {session!r} is {im_s.shape}, videos are {frame_shape}")
    result = al.align_to_template(
        im_t, im_s, others, template_name=template, name=session, method=acfg["method"],
        constraint=acfg["constraint"], nonrigid=acfg["nonrigid"], z_threshold=acfg["z_threshold"],
        radius_in=acfg["radius_in"], radius_out=acfg["radius_out"], order=acfg["order"],
        match_search=acfg["match_search"], all_to_all=acfg["all_to_all"],
        init_phase_correlation=acfg["init_phase_correlation"], bandpass=acfg["bandpass"])
    m = result.registration.matrix
    log.info("template %s -> %s: z direct %.2f, final %.2f, weakest step %.2f (threshold %g); "
             "path %s; matrix %s", template, session, result.z_direct, result.z_final, result.z_path,
             acfg["z_threshold"],
             " -> ".join(result.path), np.array2string(m, precision=4).replace("\n", ""))
    if not result.aligned:
        msg = (f"session {session!r}: alignment to template {template!r} failed the quality check "
               f"(z {result.z_final:.2f}, path {' -> '.join(result.path)} weakest step "
               f"{result.z_path:.2f}; alignment.z_threshold {acfg['z_threshold']}). Check "
               f"{snakemake.output.qc}; try alignment.constraint 'affine', alignment.method "
               "'phase_correlation', more sessions for the match search, or another template")
        if acfg["on_failure"] == "error":
            # the QC figure is what the user needs to judge the failure; Snakemake deletes
            # a failed job's outputs, so it goes beside the log
            qc_failed = Path(snakemake.log[0]).with_suffix(".qc_failed.png")
            fig = al.qc_figure(im_t, im_s, tmpl_rois, al.warp_rois(tmpl_rois, result.registration, frame_shape),
                               result, acfg["z_threshold"], f"{template} -> {session}")
            fig.savefig(qc_failed, dpi=100)
            raise ROIError(msg.replace(str(snakemake.output.qc), str(qc_failed)))
        log.warning(msg)
    rois = al.warp_rois(tmpl_rois, result.registration, frame_shape)
    if rois.point_positions is None or not len(rois.point_positions):
        raise ROIError(f"template {template!r} rois.h5 has no seed points to carry over")
    h, w = frame_shape
    pts = rois.point_positions
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
    if outside.any():
        log.warning("%d of %d warped seed points fall outside the %dx%d frame; clipped to its edge "
                    "(points are kept so that sessions share one point set)", int(outside.sum()),
                    len(pts), w, h)
        rois.point_positions = np.clip(pts, 0, [w - 1, h - 1]).astype(np.float32)
    rois.example_image = read_frame(snakemake.input.first_video, 0)
    mask = resolve_tracking_mask(rois, cfg["tracking_rois"])
    if not mask.any():
        raise ROIError(f"session {session!r}: the warped tracking mask is empty")
    with atomic_output(snakemake.output.qc) as tmp:
        fig = al.qc_figure(im_t, im_s, tmpl_rois, rois, result, acfg["z_threshold"],
                           f"{template} -> {session}")
        fig.savefig(tmp, dpi=100)
    extra = {"template": template, "z_direct": result.z_direct, "z_final": result.z_final,
             "z_path": result.z_path,
             "path": result.path, "aligned": result.aligned, "n_points_clipped": int(outside.sum())}
    return rois, mask, result, extra


if snakemake.rule == "rois_from_template":
    rois, tracking_mask, result, extra = from_template()
    inputs = [snakemake.input.template_rois, snakemake.input.template_reference,
              snakemake.input.reference, *snakemake.input.others, snakemake.input.first_video]
    params = {"source": snakemake.params.source, **cfg, "alignment": snakemake.params.alignment}
else:
    rois, tracking_mask = build_session_rois(
        source=snakemake.params.source,
        frame_shape=frame_shape,
        first_video=snakemake.input.first_video,
        roi_file=snakemake.input.get("roi_file"),
        polygons=snakemake.params.polygons,
        point_rois=cfg["point_rois"],
        tracking_rois=cfg["tracking_rois"],
        point_spacing=cfg["point_spacing"],
        use_file_points=cfg["use_file_points"],
        flip=cfg["flip_lr"],
    )
    result, extra = None, None
    inputs = [p for p in [snakemake.input.get("roi_file"), snakemake.input.first_video] if p]
    params = {"source": snakemake.params.source, **cfg}
log.info("%d ROI(s) %s; %d seed points; tracking mask %d px",
         len(rois.masks), rois.names, len(rois.point_positions), int(tracking_mask.sum()))
with atomic_output(snakemake.output.rois) as tmp:
    save_rois_h5(tmp, rois, extra={"tracking_mask": tracking_mask},
                 attrs={"point_spacing": cfg["point_spacing"], "source": snakemake.params.source})
    with h5py.File(tmp, "a") as f:
        if result is not None:
            # the warp, so that anything drawn on the template can be carried over later
            g = f.create_group("alignment")
            g.create_dataset("matrix", data=result.registration.matrix)
            if result.registration.flow is not None:
                g.create_dataset("flow", data=result.registration.flow, compression="gzip",
                                 compression_opts=1)
            for k, v in extra.items():
                g.attrs[k] = json.dumps(v) if isinstance(v, list) else v
        write_provenance(f, "rois", params=params, inputs=inputs, extra=extra)
with atomic_output(snakemake.output.example) as tmp:
    save_example_png(tmp, rois, tracking_mask)
