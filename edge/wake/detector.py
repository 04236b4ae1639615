"""The detector (engine plus policy), built from ``[wake]``.

``edge run`` (through the composition root, edge.compose), ``edge replay`` and
``edge measure`` all build their detector through these functions, so the device
and the tools can never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import WakeConfig
from edge.wake.engine import Classifier, FeatureModels, Features, StreamingEngine, WakeEngine
from edge.wake.models import ModelStore
from edge.wake.policy import DetectionPolicy, ModelPolicy, ScoreRun
from edge.wake.upstream import UpstreamEngine

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
                 models: list[str] | None = None,
                 features: Callable[[FeatureModels], Features] | None = None) -> WakeEngine:
    """The engine ``[wake]`` names; ``features`` may put something in front of the feature
    models (``edge measure`` batches the melspectrogram)."""
    store = store or model_store(wake)
    resolved = [store.resolve(m) for m in (models or wake.models)]
    mel, emb = store.path("melspectrogram"), store.path("embedding")
    if wake.engine == "openwakeword":
        return UpstreamEngine(mel, emb, resolved, wake.threads)
    models_ = FeatureModels.load(mel, emb, wake.threads)
    classifiers = [Classifier.load(name, path, wake.threads) for name, path in resolved]
    return StreamingEngine(features(models_) if features else models_, classifiers,
                           idle_gate_dbfs=wake.idle_gate_dbfs if wake.idle_gate else None)


def build_policy(wake: WakeConfig, names: tuple[str, ...],
                 on_run_end: Callable[[ScoreRun], None] | None = None) -> DetectionPolicy:
    return DetectionPolicy([
        ModelPolicy(n, wake.threshold_for(n), wake.patience, wake.refractory_s) for n in names
    ], on_run_end)


def build_detector(wake: WakeConfig, store: ModelStore | None = None,
                   models: list[str] | None = None,
                   on_run_end: Callable[[ScoreRun], None] | None = None) -> Detector:
    engine = build_engine(wake, store, models)
    return Detector(engine, build_policy(wake, engine.model_names, on_run_end))
