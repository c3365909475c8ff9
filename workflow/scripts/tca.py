"""TCA of one session: results/{session}/spectrograms.h5 -> results/{session}/tca.h5."""

import datetime as dt

from facerhythm_core.runtime import set_threads, setup_logging

log = setup_logging(snakemake)
set_threads(snakemake.threads)

import h5py  # noqa: E402

from facerhythm_core import tca  # noqa: E402
from facerhythm_core.config import check_tca_time_bins  # noqa: E402
from facerhythm_core.device import select_device  # noqa: E402
from facerhythm_core.io import atomic_output, read_provenance, write_provenance  # noqa: E402

started = dt.datetime.now(dt.timezone.utc)
cfg = dict(snakemake.params.tca)
session = snakemake.params.session
spec = tca.load_spectrograms(snakemake.input.spectrograms)
log.info("session %s: %d spectrogram(s) %s", session, len(spec.spectrograms),
         {k: v.shape for k, v in spec.spectrograms.items()})


def check_time_bins():
    """Each spectrogram's time bins against what the TCA needs, in frames of the videos."""
    with h5py.File(snakemake.input.spectrograms, "r") as f:
        prov = read_provenance(f) if "provenance" in f else {}
    params = prov.get("params", {})
    videos = prov.get("extra", {}).get("summary", {}).get("videos", {})
    if not ({"win_size_used", "downsample_factor", "padding"} <= set(params)
            and all("num_frames" in videos.get(k, {}) for k in spec.spectrograms)):
        return  # not written by our spectrogram stage; the fit checks the shapes itself
    streams = [(f"spectrogram {k}", videos[k]["num_frames"], a.shape[-1])
               for k, a in spec.spectrograms.items()]
    check_tca_time_bins(session, streams, cfg, (params["win_size_used"], params["downsample_factor"],
                                                params["padding"]))


check_time_bins()
result = tca.decompose(spec.spectrograms, videos=cfg["videos"], windows=cfg.get("windows"),
                       **tca.options_from_config(cfg, select_device(cfg["device"])))
with atomic_output(snakemake.output[0]) as tmp, h5py.File(tmp, "w") as f:
    f.attrs["session"] = session
    tca.write_tca_h5(f, result, frequencies=spec.frequencies, times=spec.times,
                     point_positions=spec.point_positions,
                     time_axes={"session_times": spec.session_times, "gap_fraction": spec.gap_fraction})
    write_provenance(f, "tca", params=cfg, inputs=[snakemake.input.spectrograms],
                     extra={"session": session, "engines": {k: d.fit.engine for k, d in
                                                            result.decompositions.items()}},
                     started=started)
log.info("wrote %s", snakemake.output[0])
