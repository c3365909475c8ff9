# Point tracking: Lucas-Kanade with an elastic mesh, per session.


rule track_points:
    input:
        unpack(tracking_inputs),
    output:
        f"{RESULTS}/{{session}}/tracking.h5",
    log:
        "logs/track_points/{session}.log",
    benchmark:
        "logs/benchmarks/track_points/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    params:
        tracking=tracking_params,
        video=config["video"],
    script:
        "../scripts/track_points.py"
