# Rhythms aligned to each session's events (sessions table column `events`), and their figure.

EVENT_SESSIONS = [s for s, v in SESSIONS.items() if v.events]


rule events:
    input:
        events=lambda wc: SESSIONS[wc.session].events,
        tca=f"{RESULTS}/{{session}}/tca.h5",
        spectrograms=f"{RESULTS}/{{session}}/spectrograms.h5",
        rois=f"{RESULTS}/{{session}}/rois.h5",
        videos_info=f"{RESULTS}/{{session}}/videos.json",
    output:
        f"{RESULTS}/{{session}}/events.h5",
    log:
        "logs/events/{session}.log",
    benchmark:
        "logs/benchmarks/events/{session}.tsv"
    wildcard_constraints:
        session=_session_regex(EVENT_SESSIONS),
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        events=config["events"],
    script:
        "../scripts/events.py"


rule plot_events:
    input:
        f"{RESULTS}/{{session}}/events.h5",
    output:
        report(
            f"{FIGURES}/events.png",
            caption="../report/events.rst",
            category="{session}",
            subcategory="5 Events",
            labels={"figure": "event-triggered TCA components"},
        ),
    log:
        "logs/plot_events/{session}.log",
    benchmark:
        "logs/benchmarks/plot_events/{session}.tsv"
    wildcard_constraints:
        session=_session_regex(EVENT_SESSIONS),
    conda:
        "../envs/facerhythm.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    script:
        "../scripts/plot_events.py"
