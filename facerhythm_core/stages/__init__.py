"""The stage API: one function per workflow rule, from input paths to finished outputs.

Each function takes paths and a parameter mapping (the config section the rule passes)
or keywords, does the whole stage (reading, the science, provenance, and writing every
output under a temporary name renamed on success, :func:`facerhythm_core.io.atomic_output`)
and returns a small summary. The workflow's scripts only unpack ``snakemake.*`` and call
one of these; benchmarks, tests and notebooks call them directly::

    from facerhythm_core import stages
    stages.track_points(...)

Modules, one per group of stages:

- :mod:`.inputs`: ``demo_video``, ``probe_videos``, ``reference_image``, ``rois``,
  ``rois_from_template``
- :mod:`.analysis`: ``track_points``, ``spectrogram``, ``tca``, ``tca_joint``, ``events``
- :mod:`.figures`: ``plot_rois``, ``plot_tracking``, ``overlay_video``,
  ``plot_spectrograms``, ``plot_tca``, ``plot_events``
- :mod:`.export`: ``nwb_export``

Progress goes to the ``facerhythm.<stage>`` loggers.
"""

from .analysis import events, spectrogram, tca, tca_joint, track_points
from .export import nwb_export
from .figures import overlay_video, plot_events, plot_rois, plot_spectrograms, plot_tca, plot_tracking
from .inputs import demo_video, probe_videos, reference_image, rois, rois_from_template

__all__ = [
    "demo_video",
    "probe_videos",
    "reference_image",
    "rois",
    "rois_from_template",
    "track_points",
    "spectrogram",
    "tca",
    "tca_joint",
    "events",
    "plot_rois",
    "plot_tracking",
    "overlay_video",
    "plot_spectrograms",
    "plot_tca",
    "plot_events",
    "nwb_export",
]
