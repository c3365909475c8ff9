"""ROI figure: masks and seed points on the example frame."""

from facerhythm_core.runtime import setup_logging

log = setup_logging(snakemake)

from facerhythm_core.runtime import limit_threads  # noqa: E402

limit_threads(snakemake.threads)

from facerhythm_core import plots  # noqa: E402
from facerhythm_core.results import read_rois  # noqa: E402

r = read_rois(snakemake.input.rois)
if r["image"] is None:
    raise SystemExit(f"{snakemake.input.rois} has no exampleImage to draw on")
spacing = f", spacing {r['point_spacing']:g} px" if r["point_spacing"] else ""
fig = plots.plot_rois(
    r["image"],
    r["masks"],
    r["points"],
    r["tracking_mask"],
    title=f"{snakemake.wildcards.session}: ROIs and {len(r['points'])} seed points{spacing}",
)
plots.save_figure(fig, snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
