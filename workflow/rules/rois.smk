# Video metadata and ROIs (masks, seed points, example frame) per session.


rule probe_videos:
    input:
        videos=session_videos,
    output:
        f"{RESULTS}/{{session}}/videos.json",
    params:
        fps=lambda wc: session_of(wc).fps,
        video=config["video"],
    log:
        "logs/probe_videos/{session}.log",
    benchmark:
        "logs/benchmarks/probe_videos/{session}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/probe_videos.py"


rule rois:
    input:
        unpack(roi_inputs),
    output:
        rois=f"{RESULTS}/{{session}}/rois.h5",
        example=f"{RESULTS}/{{session}}/example_frame.png",
    params:
        source=lambda wc: session_of(wc).rois,
        polygons=lambda wc: config["roi_sets"].get(session_of(wc).roi_ref, {}),
        rois=config["rois"],
        first_video=lambda wc: session_of(wc).videos[0],
    log:
        "logs/rois/{session}.log",
    benchmark:
        "logs/benchmarks/rois/{session}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/make_rois.py"
