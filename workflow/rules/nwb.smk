# NWB export per session (config `nwb`, docs/nwb.md): a new file, or a copy of the
# session's acquisition NWB file (sessions table column `nwb`) with our results added.

NWB_SESSIONS = list(SESSIONS) if config["nwb"]["enabled"] else []


rule nwb_export:
    input:
        unpack(nwb_inputs),
    output:
        f"{RESULTS}/{{session}}/{{session}}.nwb",
    log:
        "logs/nwb_export/{session}.log",
    benchmark:
        "logs/benchmarks/nwb_export/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        meta=lambda wc: session_metadata(config["nwb"], wc.session, session_of(wc).session_start_time),
        compression=config["nwb"]["compression"],
    script:
        "../scripts/nwb_export.py"
