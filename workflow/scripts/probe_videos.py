"""Probe a session's videos: frame counts, frame rate, size; fail early on bad input."""

import json

from _common import setup_logging

from facerhythm_core.config import check_vqt_window
from facerhythm_core.errors import ConfigError
from facerhythm_core.io import atomic_output
from facerhythm_core.tracking import load_frames_freeze
from facerhythm_core.video import probe_session

log = setup_logging(snakemake)
vcfg = snakemake.params.video
info = probe_session(list(snakemake.input.videos), fps_override=snakemake.params.fps,
                     fps_clamp=vcfg["fps_clamp"], max_fps_spread=vcfg["max_fps_spread"])
for v in info.videos:
    log.info("%s: %d frames, %.4f fps, %dx%d, %s %s", v.path, v.num_frames, v.fps, v.width,
             v.height, v.codec, v.pixel_format)
log.info("session frame rate %.4f Hz, %d frames in %d video(s)", info.frame_rate,
         info.num_frames_total, len(info.videos))
# cheap early checks, so a short video fails here and not after tracking
spec, session = snakemake.params.spectrogram, snakemake.wildcards.session
streams = (info.num_frames, info.frame_rate, spec, snakemake.params.contiguous, session,
           [v.path for v in info.videos])
w = check_vqt_window(*streams)
log.info("spectrogram window %d samples: every tracked stream is long enough", w)
if spec["padding"] == "same" and min(info.num_frames) < w:
    log.warning("session %s: a video is shorter than the spectrogram window (%d samples); its "
                "lowest frequencies are computed mostly from zero padding", session, w)
if snakemake.params.frames_freeze:  # its frame ranges against the frames now known
    frozen = load_frames_freeze(snakemake.params.frames_freeze, info.num_frames_total)
    log.info("frames_freeze %s: %d of %d frames frozen", snakemake.params.frames_freeze,
             int(frozen.sum()), info.num_frames_total)
try:  # only the tca step needs this, and it may not be a target: warn here, it fails there
    check_vqt_window(*streams, tca=snakemake.config["tca"])
except ConfigError as exc:
    log.warning("the tca step will fail on this session: %s", exc)
with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(info.to_dict(), indent=1))
