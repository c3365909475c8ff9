"""What a result key stands for: its video(s), their span on the session clock, a name.

Stage files key their per-stream datasets ``"0"``, ``"1"``, ... (one per video, or a
single ``"0"`` for a session tracked contiguously) and name a per-video TCA
decomposition after its key. These keys stay as they are (readers rely on them); the
functions here give each one the video file it comes from, for figures, ``tca.h5``
attributes, ``events.h5`` and NWB names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .errors import FaceRhythmError


def stream_spans(keys: Sequence[str], info: Mapping) -> dict[str, tuple[float, float]]:
    """Session-clock span of each tracked stream: key ``i`` is video ``i``; a single key
    for several videos (contiguous tracking) spans them all."""
    starts, ends = info["session_start"], info["session_end"]
    if len(keys) == len(starts):
        return {k: (float(starts[int(k)]), float(ends[int(k)])) for k in keys}
    if len(keys) == 1:
        return {keys[0]: (float(min(starts)), float(max(ends)))}
    raise FaceRhythmError(
        f"{len(keys)} result keys {list(keys)} for {len(starts)} videos: "
        "expected one key per video, or one key (contiguous tracking)"
    )


def stream_labels(keys: Sequence[str], video_paths: Sequence[str]) -> dict[str, str]:
    """A readable name per tracked stream: the video's file name (with as much of its
    folder as makes it unique within the session), or the files of a contiguous stream."""
    parts = [Path(p).parts for p in video_paths]
    names = []
    for i, p in enumerate(parts):
        for depth in range(1, len(p) + 1):
            cand = "/".join(p[-depth:])
            if all("/".join(q[-depth:]) != cand for j, q in enumerate(parts) if j != i):
                break
        names.append(cand)
    if len(keys) == len(names):
        return {k: names[int(k)] for k in keys}
    if len(keys) == 1 and names:
        joined = " + ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"
        return {keys[0]: f"{joined} (contiguous)"}
    return {k: f"stream {k}" for k in keys}


def decomposition_label(name: str, keys: Sequence[str], labels: Mapping[str, str]) -> str:
    """What a per-session decomposition covers: its video ('separate' mode names a
    decomposition after its stream key) or all the session's videos."""
    if name in labels:
        return labels[name]
    if len(keys) == 1 and keys[0] in labels:
        return labels[keys[0]]
    return "all videos"


def label_tca_h5(h5, video_paths: Sequence[str]) -> dict[str, str]:
    """Name a session's decompositions in an open, writable ``tca.h5`` by video file.

    Each ``decompositions/{name}`` group gets the attributes ``label`` (its video file,
    or "all videos") and ``element_labels`` (the file of each of its ``keys``); the
    group names stay the stream keys. Returns {name: label}.
    """

    def keys_of(g):
        return [k.decode() if isinstance(k, bytes) else str(k) for k in g.attrs.get("keys", [])]

    groups = h5["decompositions"]
    every = sorted({k for g in groups.values() for k in keys_of(g)}, key=lambda k: (len(k), k))
    labels = stream_labels(every, video_paths) if every else {}
    out = {}
    for name, g in groups.items():
        keys = keys_of(g)
        out[name] = decomposition_label(name, keys, labels)
        g.attrs["label"] = out[name]
        g.attrs["element_labels"] = [labels.get(k, k) for k in keys]
    return out
