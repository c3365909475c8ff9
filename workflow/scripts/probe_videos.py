"""Probe a session's videos: frame counts, rate, size and clock; fail early on bad input."""

import json

from facerhythm_core.runtime import setup_logging

from facerhythm_core.config import check_vqt_window
from facerhythm_core.errors import ConfigError
from facerhythm_core.io import atomic_output
from facerhythm_core.timing import write_timestamps_h5
from facerhythm_core.tracking import load_frames_freeze
from facerhythm_core.video import probe_session

log = setup_logging(snakemake)
vcfg = snakemake.params.video
stamps = list(snakemake.input.get("timestamps", [])) or None
info = probe_session(list(snakemake.input.videos), fps_override=snakemake.params.fps,
                     fps_clamp=vcfg["fps_clamp"], max_fps_spread=vcfg["max_fps_spread"],
                     timestamp_files=stamps, timing=vcfg["timing"],
                     allow_truncated=vcfg["allow_truncated"],
                     contiguous=snakemake.params.contiguous, log=log)
for v in info.videos:
    log.info("%s: %d frames, %.4f fps, %dx%d, %s %s; clock %s (%s)", v.path, v.num_frames, v.fps,
             v.width, v.height, v.codec, v.pixel_format, v.clock, v.timing["source"])
log.info("session frame rate %.4f Hz, %d frames in %d video(s), session clock %.3f-%.3f s",
         info.frame_rate, info.num_frames_total, len(info.videos), info.times[0][0], info.times[-1][-1])
# cheap early checks, so a short video fails here and not after tracking; a resampled
# video has as many samples as its grid at the session rate
n_samples = [v.num_frames if v.clock != "resample" else
             int((t[-1] - t[0]) * info.frame_rate + 1e-9) + 1 for v, t in zip(info.videos, info.times)]
spec, session = snakemake.params.spectrogram, snakemake.wildcards.session
streams = (n_samples, info.frame_rate, spec, snakemake.params.contiguous, session,
           [v.path for v in info.videos])
w = check_vqt_window(*streams)
log.info("spectrogram window %d samples: every tracked stream is long enough", w)
if spec["padding"] == "same" and min(n_samples) < w:
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
with atomic_output(snakemake.output.timestamps) as tmp:
    write_timestamps_h5(tmp, info.times, [v.path for v in info.videos],
                        [v.clock for v in info.videos], [v.timing["source"] for v in info.videos])
with atomic_output(snakemake.output.info) as tmp:
    tmp.write_text(json.dumps(info.to_dict(), indent=1))
