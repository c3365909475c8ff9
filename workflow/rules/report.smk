# Figures, overlay videos and the HTML report (`snakemake --report report.html`).
# Each figure has its own rule, so figures re-render without recomputing the analysis.

FIGURES = f"{RESULTS}/{{session}}/figures"
JOINT_FIGURES = f"{RESULTS}/joint/{{group}}/figures"


report: "../report/workflow.rst"


rule plot_rois:
    input:
        rois=f"{RESULTS}/{{session}}/rois.h5",
    output:
        report(
            f"{FIGURES}/rois.png",
            caption="../report/rois.rst",
            category="{session}",
            subcategory="1 ROIs",
            labels={"figure": "ROIs and seed points"},
        ),
    log:
        "logs/plot_rois/{session}.log",
    benchmark:
        "logs/benchmarks/plot_rois/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../scripts/plot_rois.py"


rule plot_tracking:
    input:
        tracking=f"{RESULTS}/{{session}}/tracking.h5",
        rois=f"{RESULTS}/{{session}}/rois.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        violations=report(
            f"{FIGURES}/violations.png",
            caption="../report/violations.rst",
            category="{session}",
            subcategory="2 Tracking",
            labels={"figure": "violations over time"},
        ),
        displacements=report(
            f"{FIGURES}/displacements.png",
            caption="../report/displacements.rst",
            category="{session}",
            subcategory="2 Tracking",
            labels={"figure": "displacement traces"},
        ),
    log:
        "logs/plot_tracking/{session}.log",
    benchmark:
        "logs/benchmarks/plot_tracking/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        n_example_points=config["report"]["n_example_points"],
    script:
        "../scripts/plot_tracking.py"


rule overlay_video:
    input:
        tracking=f"{RESULTS}/{{session}}/tracking.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
        videos=session_videos,
    output:
        report(
            f"{FIGURES}/overlay.mp4",
            caption="../report/overlay.rst",
            category="{session}",
            subcategory="2 Tracking",
            labels={"figure": "overlay video"},
        ),
    log:
        "logs/overlay_video/{session}.log",
    benchmark:
        "logs/benchmarks/overlay_video/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        start=config["report"]["overlay_start"],
        n_frames=config["report"]["overlay_frames"],
    script:
        "../scripts/plot_overlay.py"


rule plot_spectrograms:
    input:
        spectrograms=f"{RESULTS}/{{session}}/spectrograms.h5",
        rois=f"{RESULTS}/{{session}}/rois.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        spectrograms=report(
            f"{FIGURES}/spectrograms.png",
            caption="../report/spectrograms.rst",
            category="{session}",
            subcategory="3 Spectrograms",
            labels={"figure": "mean spectrogram per ROI"},
        ),
        power_spectrum=report(
            f"{FIGURES}/power_spectrum.png",
            caption="../report/power_spectrum.rst",
            category="{session}",
            subcategory="3 Spectrograms",
            labels={"figure": "mean spectrum per ROI"},
        ),
    log:
        "logs/plot_spectrograms/{session}.log",
    benchmark:
        "logs/benchmarks/plot_spectrograms/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    script:
        "../scripts/plot_spectrograms.py"


rule plot_tca:
    input:
        tca=f"{RESULTS}/{{session}}/tca.h5",
        rois=f"{RESULTS}/{{session}}/rois.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        components=report(
            directory(f"{FIGURES}/tca_components"),
            patterns=["{name}.png"],
            caption="../report/tca_components.rst",
            category="{session}",
            subcategory="4 TCA",
            labels={"figure": "TCA components", "decomposition": "{name}"},
        ),
        fit=report(
            directory(f"{FIGURES}/tca_fit"),
            patterns=["{name}.png"],
            caption="../report/tca_fit.rst",
            category="{session}",
            subcategory="4 TCA",
            labels={"figure": "TCA fit", "decomposition": "{name}"},
        ),
    log:
        "logs/plot_tca/{session}.log",
    benchmark:
        "logs/benchmarks/plot_tca/{session}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        joint=False,
        label=lambda wc: wc.session,
        sessions=lambda wc: [wc.session],
    script:
        "../scripts/plot_tca.py"


rule plot_tca_joint:
    input:
        tca=f"{RESULTS}/joint/{{group}}/tca.h5",
        rois=lambda wc: [f"{RESULTS}/{s}/rois.h5" for s in JOINT[wc.group]],
        videos_info=lambda wc: [f"{RESULTS}/{s}/videos.json" for s in JOINT[wc.group]],
    output:
        components=report(
            directory(f"{JOINT_FIGURES}/tca_components"),
            patterns=["{name}.png"],
            caption="../report/joint_tca_components.rst",
            category="joint: {group}",
            subcategory="4 TCA",
            labels={"figure": "joint TCA components", "decomposition": "{name}"},
        ),
        fit=report(
            directory(f"{JOINT_FIGURES}/tca_fit"),
            patterns=["{name}.png"],
            caption="../report/tca_fit.rst",
            category="joint: {group}",
            subcategory="4 TCA",
            labels={"figure": "joint TCA fit", "decomposition": "{name}"},
        ),
    log:
        "logs/plot_tca_joint/{group}.log",
    benchmark:
        "logs/benchmarks/plot_tca_joint/{group}.tsv"
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        joint=True,
        label=lambda wc: f"joint group {wc.group}",
        sessions=lambda wc: list(JOINT[wc.group]),
    script:
        "../scripts/plot_tca.py"
