"""TCA of one session: results/{session}/spectrograms.h5 -> results/{session}/tca.h5."""

import datetime as dt
import json

from _common import set_threads, setup_logging

log = setup_logging(snakemake)
set_threads(snakemake.threads)

import h5py  # noqa: E402

from facerhythm_core import tca  # noqa: E402
from facerhythm_core.device import select_device  # noqa: E402
from facerhythm_core.io import atomic_output, write_provenance  # noqa: E402
from facerhythm_core.streams import label_tca_h5  # noqa: E402

started = dt.datetime.now(dt.timezone.utc)
cfg = dict(snakemake.params.tca)
session = snakemake.params.session
spec = tca.load_spectrograms(snakemake.input.spectrograms)
log.info("session %s: %d spectrogram(s) %s", session, len(spec.spectrograms),
         {k: v.shape for k, v in spec.spectrograms.items()})
result = tca.decompose(spec.spectrograms, videos=cfg["videos"], windows=cfg.get("windows"),
                       **tca.options_from_config(cfg, select_device(cfg["device"])))
with atomic_output(snakemake.output[0]) as tmp, h5py.File(tmp, "w") as f:
    f.attrs["session"] = session
    tca.write_tca_h5(f, result, frequencies=spec.frequencies, times=spec.times,
                     point_positions=spec.point_positions,
                     time_axes={"session_times": spec.session_times, "gap_fraction": spec.gap_fraction})
    with open(snakemake.input.videos_info) as fh:
        log.info("decompositions by video file: %s",
                 label_tca_h5(f, [v["path"] for v in json.load(fh)["videos"]]))
    write_provenance(f, "tca", params=cfg, inputs=[snakemake.input.spectrograms],
                     extra={"session": session, "engines": {k: d.fit.engine for k, d in
                                                            result.decompositions.items()}},
                     started=started)
log.info("wrote %s", snakemake.output[0])
