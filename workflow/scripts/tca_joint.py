"""Joint TCA of a group of sessions -> results/joint/{group}/tca.h5.

Every (session, video) element is concatenated along time (``tca.videos`` other than
``stack``), or each session's videos are joined and the sessions stacked on a leading
``session`` axis (``tca.videos: stack``). Sessions must share one point set.
"""

import datetime as dt

from facerhythm_core.runtime import set_threads, setup_logging

log = setup_logging(snakemake)
set_threads(snakemake.threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from facerhythm_core import tca  # noqa: E402
from facerhythm_core.device import select_device  # noqa: E402
from facerhythm_core.errors import TCAError  # noqa: E402
from facerhythm_core.io import atomic_output, write_provenance  # noqa: E402

started = dt.datetime.now(dt.timezone.utc)
cfg = dict(snakemake.params.tca)
group = snakemake.params.group
sessions = list(snakemake.params.sessions)
paths = list(snakemake.input.spectrograms)
if len(paths) != len(sessions):
    raise TCAError(f"joint group {group!r}: {len(sessions)} sessions but {len(paths)} "
                   "spectrogram files")
specs = {sid: tca.load_spectrograms(p) for sid, p in zip(sessions, paths)}
freqs = [s.frequencies for s in specs.values()]
if any(f.shape != freqs[0].shape or not np.allclose(f, freqs[0]) for f in freqs[1:]):
    raise TCAError(f"joint group {group!r}: sessions have different spectrogram frequencies; "
                   "use one spectrogram configuration (fs, f_min, f_max, n_freq_bins) for all")
mode = "stack" if cfg["videos"] == "stack" else "concatenate"
log.info("joint group %s (%s): sessions %s", group, mode,
         {sid: {k: v.shape for k, v in s.spectrograms.items()} for sid, s in specs.items()})
result = tca.decompose_joint({sid: s.spectrograms for sid, s in specs.items()}, mode=mode,
                             **tca.options_from_config(cfg, select_device(cfg["device"])))


def joint_axis(axis_of):
    """An axis of every element (``session/video``), or per session when stacked."""
    if mode == "stack":  # one time axis per session: its videos' axes, joined
        return {sid: np.concatenate([axis_of(s)[k] for k in s.spectrograms])
                for sid, s in specs.items() if all(k in axis_of(s) for k in s.spectrograms)}
    return {f"{sid}/{k}": t for sid, s in specs.items() for k, t in axis_of(s).items()}


times = joint_axis(lambda s: s.times)
time_axes = {"session_times": joint_axis(lambda s: s.session_times),
             "gap_fraction": joint_axis(lambda s: s.gap_fraction)}
with atomic_output(snakemake.output[0]) as tmp, h5py.File(tmp, "w") as f:
    f.attrs["group"] = group
    f.attrs["joint_mode"] = mode
    f.create_dataset("sessions", data=sessions, dtype=h5py.string_dtype())
    tca.write_tca_h5(f, result, frequencies=freqs[0], times=times,
                     point_positions={sid: s.point_positions for sid, s in specs.items()},
                     time_axes=time_axes)
    write_provenance(f, "tca_joint", params=cfg, inputs=paths,
                     extra={"group": group, "sessions": sessions, "mode": mode,
                            **result.extra}, started=started)
log.info("wrote %s", snakemake.output[0])
