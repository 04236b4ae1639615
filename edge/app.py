"""The composition root: every pipeline object is built here, from the config.

``edge run``, ``edge replay`` and ``edge measure`` all build their detector
through these functions, so the device and the tools can never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.clip import Clip
from edge.clock import Clock, SystemClock
from edge.config import Config, WakeConfig
from edge.engine import Classifier, FeatureModels, StreamingEngine, UpstreamEngine, WakeEngine
from edge.events import EventBus
from edge.modelstore import ModelStore
from edge.policy import DetectionPolicy, ModelPolicy
from edge.recorder import Recorder
from edge.vad import SileroVad

log = logging.getLogger(__name__)


def model_store(wake: WakeConfig) -> ModelStore:
    return ModelStore.default(Path(wake.models_dir).expanduser() if wake.models_dir else None)


@dataclass
class Detector:
    """Engine plus policy: scores in, detections out."""

    engine: WakeEngine
    policy: DetectionPolicy

    @property
    def names(self) -> tuple[str, ...]:
        return self.engine.model_names

    def reset(self) -> None:
        self.engine.reset()
        self.policy.reset()


def build_engine(wake: WakeConfig, store: ModelStore | None = None,
                 models: list[str] | None = None) -> WakeEngine:
    store = store or model_store(wake)
    resolved = [store.resolve(m) for m in (models or wake.models)]
    mel, emb = store.path("melspectrogram"), store.path("embedding")
    if wake.engine == "openwakeword":
        return UpstreamEngine(mel, emb, resolved, wake.threads)
    features = FeatureModels.load(mel, emb, wake.threads)
    classifiers = [Classifier.load(name, path, wake.threads) for name, path in resolved]
    return StreamingEngine(features, classifiers,
                           idle_gate_dbfs=wake.idle_gate_dbfs if wake.idle_gate else None)


def build_policy(wake: WakeConfig, names: tuple[str, ...]) -> DetectionPolicy:
    return DetectionPolicy([
        ModelPolicy(n, wake.threshold_for(n), wake.patience, wake.refractory_s) for n in names
    ])


def build_detector(wake: WakeConfig, store: ModelStore | None = None,
                   models: list[str] | None = None) -> Detector:
    engine = build_engine(wake, store, models)
    return Detector(engine, build_policy(wake, engine.model_names))


def build_recorder(cfg: Config, detector: Detector, bus: EventBus,
                   clip_out: Callable[[Clip], None], clock: Clock | None = None,
                   store: ModelStore | None = None, cancel_window_s: float = 0.0) -> Recorder:
    store = store or model_store(cfg.wake)
    vad = SileroVad.load(store.path("silero_vad"))
    return Recorder(detector.engine, detector.policy, vad, cfg.record, cfg.audio.pre_roll_s, bus,
                    clip_out, clock or SystemClock(), cancel_window_s=cancel_window_s,
                    keep_false_audio=cfg.activations.enabled
                    and cfg.activations.keep_false_activation_audio)
