# NWB export per session (config `nwb`, docs/nwb.md): a new file, or a copy of the
# session's acquisition NWB file (sessions table column `nwb`) with our results added.

NWB_SESSIONS = list(SESSIONS) if config["nwb"]["enabled"] else []


def nwb_targets():
    return [f"{RESULTS}/{s}/{s}.nwb" for s in NWB_SESSIONS]


def nwb_inputs(wildcards):
    s = session_of(wildcards)
    d = f"{RESULTS}/{s.session}"
    out = {"tracking": f"{d}/tracking.h5", "spectrograms": f"{d}/spectrograms.h5",
           "tca": f"{d}/tca.h5", "rois": f"{d}/rois.h5", "videos_info": f"{d}/videos.json",
           "timestamps": f"{d}/timestamps.h5"}
    if s.events:
        out["events"] = s.events
    if s.nwb:
        out["acquisition"] = s.nwb
    return out


rule nwb_export:
    input:
        unpack(nwb_inputs),
    output:
        f"{RESULTS}/{{session}}/{{session}}.nwb",
    params:
        meta=lambda wc: session_metadata(config["nwb"], wc.session, session_of(wc).session_start_time),
        compression=config["nwb"]["compression"],
    log:
        "logs/nwb_export/{session}.log",
    benchmark:
        "logs/benchmarks/nwb_export/{session}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../envs/facerhythm.yaml"
    script:
        "../scripts/nwb_export.py"
