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
- :mod:`.analysis`: ``track_points``, ``spectrogram``, ``tca``, ``tca_joint``

Progress goes to the ``facerhythm.<stage>`` loggers.
"""

from .analysis import spectrogram, tca, tca_joint, track_points
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
]
