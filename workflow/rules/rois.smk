# Video metadata and ROIs (masks, seed points, example frame) per session.
# Sessions whose `rois` column says template:ID get the template session's ROIs warped
# onto their own reference image (docs/alignment.md).

#: the `alignment` config section, defaults filled in by the schema (docs/alignment.md)
ALIGNMENT = config["alignment"]

TEMPLATE_SESSIONS = [s for s in SESSIONS.values() if s.roi_kind == "template"]


def _session_regex(ids):
    return "|".join(re.escape(i) for i in ids) if ids else "$^"


def template_siblings(s):
    """Other sessions that take their ROIs from the same template (match-search nodes)."""
    return [o.session for o in TEMPLATE_SESSIONS if o.roi_ref == s.roi_ref and o.session != s.session]


def template_roi_inputs(wildcards):
    s = session_of(wildcards)
    out = {
        "videos_info": f"{RESULTS}/{s.session}/videos.json",
        "template_rois": f"{RESULTS}/{s.roi_ref}/rois.h5",
        "template_reference": f"{RESULTS}/{s.roi_ref}/reference_image.npy",
        "reference": f"{RESULTS}/{s.session}/reference_image.npy",
        "others": [],
    }
    if ALIGNMENT["match_search"]:
        out["others"] = [f"{RESULTS}/{o}/reference_image.npy" for o in template_siblings(s)]
    return out


rule probe_videos:
    input:
        unpack(probe_inputs),
    output:
        info=f"{RESULTS}/{{session}}/videos.json",
        timestamps=f"{RESULTS}/{{session}}/timestamps.h5",
    params:
        fps=lambda wc: session_of(wc).fps,
        frames_freeze=lambda wc: session_of(wc).frames_freeze,
        video=config["video"],
        spectrogram=config["spectrogram"],
        contiguous=session_contiguous,
    log:
        "logs/probe_videos/{session}.log",
    benchmark:
        "logs/benchmarks/probe_videos/{session}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../scripts/probe_videos.py"


rule rois:
    wildcard_constraints:
        session=_session_regex([s for s in SESSIONS if SESSIONS[s].roi_kind != "template"]),
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
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../scripts/make_rois.py"


rule reference_image:
    input:
        videos=session_videos,
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        f"{RESULTS}/{{session}}/reference_image.npy",
    params:
        alignment=ALIGNMENT,
        video=config["video"],
    log:
        "logs/reference_image/{session}.log",
    benchmark:
        "logs/benchmarks/reference_image/{session}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    script:
        "../scripts/reference_image.py"


rule rois_from_template:
    wildcard_constraints:
        session=_session_regex([s.session for s in TEMPLATE_SESSIONS]),
    input:
        unpack(template_roi_inputs),
    output:
        rois=f"{RESULTS}/{{session}}/rois.h5",
        example=f"{RESULTS}/{{session}}/example_frame.png",
        qc=f"{RESULTS}/{{session}}/roi_transfer_qc.png",
    params:
        source=lambda wc: session_of(wc).rois,
        template=lambda wc: session_of(wc).roi_ref,
        others=lambda wc: template_siblings(session_of(wc)) if ALIGNMENT["match_search"] else [],
        rois=config["rois"],
        alignment=ALIGNMENT,
        first_video=lambda wc: session_of(wc).videos[0],
    log:
        "logs/rois/{session}.log",
    benchmark:
        "logs/benchmarks/rois/{session}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    script:
        "../scripts/rois_from_template.py"
