"""Event-triggered averages of the TCA components, one column per label (events.h5 -> PNG)."""

from facerhythm_core.runtime import setup_logging

log = setup_logging(snakemake)

from facerhythm_core import plots  # noqa: E402
from facerhythm_core.events import figure_columns, read_events_h5  # noqa: E402

ev = read_events_h5(snakemake.input[0])
columns = figure_columns(ev)
fig = plots.plot_event_triggered(
    columns,
    title=f"{snakemake.wildcards.session}: TCA components around events (mean, {100 * ev['attrs']['ci']:g}% CI)",
)
plots.save_figure(fig, snakemake.output[0], dpi=90)
log.info("%d panel column(s) -> %s", len(columns), snakemake.output[0])
