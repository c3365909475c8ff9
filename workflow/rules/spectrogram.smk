# Variable-Q spectrograms of point displacements, per session.


rule spectrogram:
    input:
        tracking=f"{RESULTS}/{{session}}/tracking.h5",
    output:
        f"{RESULTS}/{{session}}/spectrograms.h5",
    log:
        "logs/spectrogram/{session}.log",
    benchmark:
        "logs/benchmarks/spectrogram/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=spectrogram_mem_mb,
        runtime=lambda wc, attempt: 120 * attempt,
    params:
        spectrogram=config["spectrogram"],
        session=lambda wc: wc.session,
    script:
        "../scripts/spectrogram.py"
