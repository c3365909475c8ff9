# Point tracking: Lucas-Kanade with an elastic mesh, per session.


rule track_points:
    input:
        unpack(tracking_inputs),
    output:
        f"{RESULTS}/{{session}}/tracking.h5",
    params:
        tracking=tracking_params,
        video=config["video"],
    log:
        "logs/track_points/{session}.log",
    benchmark:
        "logs/benchmarks/track_points/{session}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    conda:
        "../envs/facerhythm.yaml"
    script:
        "../scripts/track_points.py"
