# The bundled demo: synthetic face videos with planted rhythms, made on demand.


rule demo_video:
    output:
        video="resources/demo/{demo}.mp4",
        truth="resources/demo/{demo}.truth.json",
    log:
        "logs/demo_video/{demo}.log",
    benchmark:
        "logs/benchmarks/demo_video/{demo}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../scripts/make_demo_video.py"
