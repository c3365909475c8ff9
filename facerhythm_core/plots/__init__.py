"""Figures for quality control and results (Matplotlib, headless).

Every ``plot_*`` function takes arrays and returns a :class:`matplotlib.figure.Figure`
built without pyplot (so nothing needs a display and no global figure state is kept);
:func:`save_figure` writes it atomically. Styling (fonts, colour cycle) is applied
through :func:`matplotlib.rc_context` inside each function, never globally.

Colours: the Okabe-Ito palette for lines and ROIs, ``viridis`` / ``magma`` for
magnitudes, ``twilight`` (cyclic) for phases; all are colour-blind safe.
Units: time in seconds, frequency in Hz, positions and displacements in pixels.

Modules: :mod:`.style` (palette, figures, saving, shared axes helpers), :mod:`.arrays`
(pure array helpers), :mod:`.tracking` (ROIs, violations, displacements),
:mod:`.spectra` (mean spectrograms and spectra per ROI), :mod:`.tca` (components and
fit), :mod:`.events` (event-triggered averages). Everything is re-exported here:
``from facerhythm_core import plots; plots.plot_rois(...)``.
"""

from .arrays import (
    MAX_DRAWN,
    bin_series,
    choose_example_points,
    point_index_map,
    points_in_masks,
    typical_spacing,
)
from .events import plot_event_triggered
from .spectra import plot_mean_spectrograms, plot_power_spectrum, roi_mean_spectrogram
from .style import OKABE_ITO, STYLE, new_figure, phase_rgba, save_figure
from .tca import plot_tca_components, plot_tca_fit
from .tracking import plot_displacement_traces, plot_rois, plot_violations

__all__ = [
    "OKABE_ITO",
    "STYLE",
    "MAX_DRAWN",
    "new_figure",
    "save_figure",
    "phase_rgba",
    "points_in_masks",
    "typical_spacing",
    "point_index_map",
    "choose_example_points",
    "bin_series",
    "plot_rois",
    "plot_violations",
    "plot_displacement_traces",
    "roi_mean_spectrogram",
    "plot_mean_spectrograms",
    "plot_power_spectrum",
    "plot_tca_components",
    "plot_tca_fit",
    "plot_event_triggered",
]
