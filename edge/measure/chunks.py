"""Tasks: a file, or a chunk of a long one, and the audio a task reads.

A long negative file at 16 kHz is cut into chunks of :data:`CHUNK_FRAMES` frames, each
its own task, so one long recording keeps every core (or every cluster worker) busy.
A chunk is read from the file directly (a seek: at 16 kHz the conversion is sample by
sample, so its frames are exactly the frames of the whole stream), starting the
engine's lead (:func:`edge.measure.batch.lead_frames`) before its first scored frame.
A file at another rate is one task, read as a stream: resampling carries state from
the start of the file, so its frames are only exact when read from there.

A positive is one task: exactly ``pad_s`` seconds of digital silence before the
utterance (rounded to the sample), then the utterance, then at least ``pad_s`` of
silence (the last frame is completed with silence).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.audio.sources import FrameAssembler
from edge.errors import AudioFormatError
from edge.measure.corpus import Job

CHUNK_FRAMES = 1875
"""Frames per chunk of a long file: 2.5 minutes of audio (eight chunks in 20 minutes keep
two or four cores evenly busy; each also reads the lead before it, about 7 s)."""
BLOCK_FRAMES = 3750
"""Frames a task reads and scores at a time (about 10 MB of int16)."""


@dataclass(frozen=True)
class Task:
    """The frames ``first`` to ``end`` (exclusive; None: to the end of the file) of a job."""

    job: Job
    first: int = 0
    end: int | None = None
    chunks: int = 1
    """How many tasks the job was cut into."""


@dataclass(frozen=True)
class FileInfo:
    """What planning needs of a readable file."""

    rate: int
    frames: int
    """Audio frames in the file, at its own rate."""

    @property
    def stream_frames(self) -> int:
        """80 ms frames of the 16 kHz stream (the last one completed with silence)."""
        return math.ceil(self.frames / FRAME_SAMPLES) if self.rate == SAMPLE_RATE else -1


def file_info(path: object) -> FileInfo:
    import soundfile as sf

    info = sf.info(str(path))
    return FileInfo(int(info.samplerate), int(info.frames))


def plan(jobs: list[Job], infos: dict[int, FileInfo], split: bool,
         chunk_frames: int = CHUNK_FRAMES) -> list[Task]:
    """The tasks for ``jobs``: long 16 kHz negatives cut in chunks when ``split``."""
    tasks: list[Task] = []
    for job in jobs:
        info = infos.get(job.index)
        n = info.stream_frames if info is not None else -1
        if not split or job.kind != "negative" or n <= chunk_frames * 3 // 2:
            tasks.append(Task(job))
            continue
        count = math.ceil(n / chunk_frames)
        size = math.ceil(n / count)
        tasks += [Task(job, a, min(a + size, n), count) for a in range(0, n, size)]
    return tasks


def read_frames(path: object, channel: int, first: int, end: int) -> np.ndarray:
    """Frames ``first`` to ``end`` (n, 1280) of a 16 kHz file, as FileSource gives them."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != SAMPLE_RATE:
                raise AudioFormatError(f"{path} is not at {SAMPLE_RATE} Hz; it cannot be seeked")
            asm = FrameAssembler(f.samplerate, f.channels, channel)  # checks the channel
            f.seek(first * FRAME_SAMPLES)
            want = (end - first) * FRAME_SAMPLES
            if f.subtype == "PCM_16" and (f.channels == 1 or channel >= 0):
                # The float path gives back exactly these samples (s / 32768 * 32768).
                pcm = f.read(want, dtype="int16", always_2d=True)[:, max(channel, 0)]
                n = -(-len(pcm) // FRAME_SAMPLES)
                out = np.zeros(n * FRAME_SAMPLES, np.int16)
                out[:len(pcm)] = pcm
                return out.reshape(n, FRAME_SAMPLES)
            block = f.read(want, dtype="float32", always_2d=True)
            frames = asm.push(block, last=len(block) < want)
    except AudioFormatError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioFormatError(f"{path} is truncated or corrupt ({exc})") from None
    if not frames:
        return np.zeros((0, FRAME_SAMPLES), np.int16)
    return np.stack(frames)


def task_blocks(task: Task, channel: int, lead: int, pad_s: float) -> Iterator[np.ndarray]:
    """The frames a task scores, in blocks; a chunk's first block is its ``lead`` frames
    (fewer at the start of the file), read for context only."""
    job = task.job
    end = task.end
    if end is None:
        info = file_info(job.path)
        if job.kind == "positive" or info.rate != SAMPLE_RATE:
            yield from _stream(job, channel, pad_s)
            return
        end = info.stream_frames
    start = max(0, task.first - lead)
    if start < task.first:
        yield read_frames(job.path, channel, start, task.first)
    for a in range(task.first, end, BLOCK_FRAMES):
        block = read_frames(job.path, channel, a, min(a + BLOCK_FRAMES, end))
        if len(block):
            yield block


def _stream(job: Job, channel: int, pad_s: float) -> Iterator[np.ndarray]:
    source = FileSource(job.path, channel)
    try:
        if job.kind == "positive":
            yield padded(source, pad_s)
            return
        buf: list[np.ndarray] = []
        while (frame := source.read()) is not None:
            buf.append(frame)
            if len(buf) == BLOCK_FRAMES:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)
    finally:
        source.close()


def padded(source: FileSource, pad_s: float) -> np.ndarray:
    """A positive's frames: ``pad_s`` of silence (to the sample), the utterance, silence."""
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    pad = round(pad_s * SAMPLE_RATE)
    audio = np.concatenate(frames) if frames else np.zeros(0, np.int16)
    total = math.ceil((pad + len(audio) + pad) / FRAME_SAMPLES) * FRAME_SAMPLES
    out = np.zeros(total, np.int16)
    out[pad:pad + len(audio)] = audio
    return out.reshape(-1, FRAME_SAMPLES)
