# Video metadata and ROIs (masks, seed points, example frame) per session.
# Sessions whose `rois` column says template:ID get the template session's ROIs warped
# onto their own reference image (docs/alignment.md).

#: the `alignment` config section, defaults filled in by the schema (docs/alignment.md)
ALIGNMENT = config["alignment"]

TEMPLATE_SESSIONS = [s for s in SESSIONS.values() if s.roi_kind == "template"]


rule probe_videos:
    input:
        unpack(probe_inputs),
    output:
        info=f"{RESULTS}/{{session}}/videos.json",
        timestamps=f"{RESULTS}/{{session}}/timestamps.h5",
    log:
        "logs/probe_videos/{session}.log",
    benchmark:
        "logs/benchmarks/probe_videos/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        fps=lambda wc: session_of(wc).fps,
        frames_freeze=lambda wc: session_of(wc).frames_freeze,
        video=config["video"],
        spectrogram=config["spectrogram"],
        contiguous=session_contiguous,
    script:
        "../scripts/probe_videos.py"


rule rois:
    input:
        unpack(roi_inputs),
    output:
        rois=f"{RESULTS}/{{session}}/rois.h5",
        example=f"{RESULTS}/{{session}}/example_frame.png",
    log:
        "logs/rois/{session}.log",
    benchmark:
        "logs/benchmarks/rois/{session}.tsv"
    wildcard_constraints:
        session=_session_regex([s for s in SESSIONS if SESSIONS[s].roi_kind != "template"]),
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        source=lambda wc: session_of(wc).rois,
        polygons=lambda wc: config["roi_sets"].get(session_of(wc).roi_ref, {}),
        rois=config["rois"],
    script:
        "../scripts/make_rois.py"


rule reference_image:
    input:
        videos=session_videos,
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        f"{RESULTS}/{{session}}/reference_image.npy",
    log:
        "logs/reference_image/{session}.log",
    benchmark:
        "logs/benchmarks/reference_image/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        alignment=ALIGNMENT,
        video=config["video"],
    script:
        "../scripts/reference_image.py"


rule rois_from_template:
    input:
        unpack(template_roi_inputs),
    output:
        rois=f"{RESULTS}/{{session}}/rois.h5",
        example=f"{RESULTS}/{{session}}/example_frame.png",
        qc=f"{RESULTS}/{{session}}/roi_transfer_qc.png",
    log:
        "logs/rois/{session}.log",
    benchmark:
        "logs/benchmarks/rois/{session}.tsv"
    wildcard_constraints:
        session=_session_regex([s.session for s in TEMPLATE_SESSIONS]),
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        source=lambda wc: session_of(wc).rois,
        template=lambda wc: session_of(wc).roi_ref,
        others=lambda wc: template_siblings(session_of(wc)) if ALIGNMENT["match_search"] else [],
        rois=config["rois"],
        alignment=ALIGNMENT,
    script:
        "../scripts/rois_from_template.py"
