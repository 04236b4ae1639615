"""Helpers for the activation-log tests: a daemon-shaped harness over a scripted engine."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.activations.plugin import ActivationLogPlugin
from edge.activations.store import ActivationRow
from edge.audio.frames import FRAME_SAMPLES
from edge.clock import FakeClock
from edge.config import ActivationsConfig, Config, RecordConfig, UploadConfig, replace
from edge.pipeline.events import EventBus, RunEnded
from edge.pipeline.recorder import Recorder
from edge.wake.detector import Detector
from edge.wake.policy import DetectionPolicy, ModelPolicy
from tests.fakes import LevelVad

FRAME_S = 0.08


class ScoreScript:
    """A wake engine whose score on frame i is ``scores.get(i, 0.0)``."""

    def __init__(self, scores: dict[int, float], name: str = "m") -> None:
        self.scores = scores
        self.name = name
        self.i = 0

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.name,)

    def process(self, frame: np.ndarray) -> np.ndarray:
        s = self.scores.get(self.i, 0.0)
        self.i += 1
        return np.array([s], dtype=np.float32)

    def reset(self) -> None:
        pass

    def zero(self) -> None:
        pass


def config(tmp: Path, **activations: Any) -> Config:
    upload = activations.pop("upload", UploadConfig())
    return replace(Config(), state_dir=str(tmp), upload=upload,
                   activations=ActivationsConfig(**activations))


class Harness:
    """The daemon's composition (as edge.compose wires the log), minus models: a scripted
    engine, a level VAD, the activation log.

    ``feed`` plays the audio loop: each frame goes to the recorder, then the frame hooks.
    """

    def __init__(self, cfg: Config, scores: dict[int, float], threshold: float = 0.5,
                 record: RecordConfig | None = None, plugin: ActivationLogPlugin | None = None,
                 verifier: Any = None) -> None:
        self.cfg = cfg
        self.clock = FakeClock()
        self.bus = EventBus()
        self.on_frame: list[Callable[[], None]] = []
        self.clips: list[Any] = []
        policy = DetectionPolicy([ModelPolicy("m", threshold)],
                                 on_run_end=lambda run: self.bus.publish(RunEnded(run)))
        self.detector = Detector(ScoreScript(scores), policy)
        self.plugin = plugin or ActivationLogPlugin(
            cfg, self.clock, clips_kept=cfg.output.keep_local or cfg.upload.mode != "off",
            thresholds=policy.thresholds, verifier=verifier)
        self.bus.subscribe("activation-log", self.plugin.on_event)
        if cfg.activations.checkpoint_s:
            self.on_frame.append(self.plugin.on_frame)
        self.plugin.start()
        self.recorder = Recorder(
            self.detector.engine, self.detector.policy, LevelVad(), record or RecordConfig(),
            1.5, self.bus, self.clips.append, self.clock,
            keep_false_audio=cfg.activations.keep_false_activation_audio)

    def feed(self, n: int, loud: set[int] | None = None) -> None:
        """``n`` frames; those whose stream index is in ``loud`` count as speech."""
        loud = loud or set()
        for _ in range(n):
            i = self.recorder.frame_index
            level = 1000 if i in loud else 10
            self.recorder.feed(np.full(FRAME_SAMPLES, level, dtype=np.int16))
            self.clock.advance(FRAME_S)
            for hook in self.on_frame:
                hook()

    def close(self) -> None:
        self.recorder.shutdown()
        self.bus.flush()
        self.plugin.close()
        self.bus.close()


def rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM activations ORDER BY n")]
    finally:
        conn.close()


def row(id: str = "a1", **kw: Any) -> ActivationRow:
    base: dict[str, Any] = dict(
        id=id, wall_time=1_700_000_000.0, model="m", threshold=0.5, peak_score=0.9,
        frames_over=3, clip_id=f"clip-{id}", duration_s=4.0, vad_speech_ratio=0.5,
        end_reason="silence", outcome="kept", likely_false=False)
    base.update(kw)
    return ActivationRow(**base)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
