"""Render one bundled demo video (deterministic) and its ground truth JSON."""

import json
from pathlib import Path

from facerhythm_core.runtime import setup_logging

from facerhythm_core.demo import DEMO_VIDEOS, write_demo_video
from facerhythm_core.io import atomic_output

log = setup_logging(snakemake)
name = snakemake.wildcards.demo
out = Path(snakemake.output.video)
with atomic_output(out) as tmp:
    truth = write_demo_video(tmp, **DEMO_VIDEOS[name])
truth["path"] = str(out)
with atomic_output(snakemake.output.truth) as tmp:
    tmp.write_text(json.dumps(truth, indent=1))
log.info("wrote %s: %d frames at %.1f fps", out, truth["n_frames"], truth["fps"])
