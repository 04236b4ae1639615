"""Snippets: every detection at the device's threshold, cut from the file as a WAV.

The detections come from a file's whole score track (stitched from its chunks), with
the device's policy (:func:`edge.measure.sweep.activations`, which equals
:func:`edge.wake.policy.detections_over`). A snippet is the pre-roll
(``audio.pre_roll_s``, ending with the triggering frame, as the device's clip starts)
plus :data:`SNIPPET_AFTER_S` after it, read back from the file once the scores are in.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
from edge.config import Config
from edge.files import atomic_write, name_part, private_dir
from edge.measure.chunks import file_info, read_frames
from edge.measure.corpus import Job
from edge.measure.sweep import activations
from edge.pipeline.recorder import frames_for
from edge.wake.detector import build_policy
from edge.wake.policy import Detection

SNIPPET_AFTER_S = 2.0
SNIPPETS_DIR = "snippets"


@dataclass(frozen=True)
class Snippet:
    file: str
    t: float
    """Stream time of the detection (end of the triggering frame), s."""
    model: str
    score: float
    threshold: float
    start: float
    """Stream time of the snippet's first sample, s."""
    path: str
    """Relative to the output folder."""


def detections(cfg: Config, names: tuple[str, ...], scores: np.ndarray) -> list[Detection]:
    """The device's detections over a whole file's scores, in stream order."""
    policy = build_policy(cfg.wake, names)
    found = [(d.frame_index, k, d) for k, m in enumerate(policy.models)
             for d in activations(scores[:, k], m)]
    return [d for _, _, d in sorted(found, key=lambda x: (x[0], x[1]))]


def cut(cfg: Config, job: Job, found: list[Detection], n_frames: int,
        out_dir: Path) -> list[Snippet]:
    """Write one WAV per detection into ``out_dir/snippets`` (0600: it is someone's speech)."""
    if not found:
        return []
    import soundfile as sf

    pre, after = frames_for(cfg.audio.pre_roll_s), frames_for(SNIPPET_AFTER_S)
    spans = [(max(0, d.frame_index + 1 - pre), min(n_frames, d.frame_index + 1 + after))
             for d in found]
    audio = _frames_at(job.path, cfg.audio.channel, spans)
    folder = private_dir(out_dir / SNIPPETS_DIR)
    stem = name_part(job.path.stem)
    out = []
    for d, (a, _), frames in zip(found, spans, audio, strict=True):
        name = f"{job.index:05d}_{stem}_{name_part(d.model)}_{d.t:.2f}s.wav"
        buf = io.BytesIO()
        sf.write(buf, frames.reshape(-1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        atomic_write(folder / name, buf.getvalue())
        out.append(Snippet(str(job.path), d.t, d.model, d.score, d.threshold,
                           round(a * FRAME_S, 6), f"{SNIPPETS_DIR}/{name}"))
    return out


def _frames_at(path: Path, channel: int, spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """The frames of each (first, end) span: seeked at 16 kHz, else in one streaming pass."""
    if file_info(path).rate == SAMPLE_RATE:
        return [read_frames(path, channel, a, b) for a, b in spans]
    parts: list[list[np.ndarray]] = [[] for _ in spans]
    last = max(b for _, b in spans)
    source = FileSource(path, channel)
    try:
        i = 0
        while i < last and (frame := source.read()) is not None:
            for k, (a, b) in enumerate(spans):
                if a <= i < b:
                    parts[k].append(frame)
            i += 1
    finally:
        source.close()
    return [np.stack(p) if p else np.zeros((0, FRAME_SAMPLES), np.int16) for p in parts]
