# Tensor component analysis: one per session, and joint across groups of sessions.


rule tca:
    input:
        spectrograms=f"{RESULTS}/{{session}}/spectrograms.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        f"{RESULTS}/{{session}}/tca.h5",
    log:
        "logs/tca/{session}.log",
    benchmark:
        "logs/benchmarks/tca/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=tca_mem_mb,
        runtime=lambda wc, attempt: 240 * attempt,
    params:
        tca=config["tca"],
        session=lambda wc: wc.session,
    script:
        "../scripts/tca.py"


rule tca_joint:
    input:
        spectrograms=joint_spectrograms,
    output:
        f"{RESULTS}/joint/{{group}}/tca.h5",
    log:
        "logs/tca_joint/{group}.log",
    benchmark:
        "logs/benchmarks/tca_joint/{group}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=tca_mem_mb,
        runtime=lambda wc, attempt: 480 * attempt,
    params:
        tca=config["tca"],
        group=lambda wc: wc.group,
        sessions=lambda wc: list(JOINT[wc.group]),
    script:
        "../scripts/tca_joint.py"
