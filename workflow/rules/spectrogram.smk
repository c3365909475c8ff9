# Variable-Q spectrograms of point displacements, per session.


rule spectrogram:
    input:
        tracking=f"{RESULTS}/{{session}}/tracking.h5",
    output:
        f"{RESULTS}/{{session}}/spectrograms.h5",
    params:
        spectrogram=config["spectrogram"],
        session=lambda wc: wc.session,
    log:
        "logs/spectrogram/{session}.log",
    benchmark:
        "logs/benchmarks/spectrogram/{session}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=spectrogram_mem_mb,
        runtime=lambda wc, attempt: 120 * attempt,
    conda:
        "../envs/facerhythm.yaml"
    script:
        "../scripts/spectrogram.py"
