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
from edge.wake.models import ModelStore, is_micro, model_store
from edge.wake.policy import DetectionPolicy, ModelPolicy, ScoreRun
from edge.wake.upstream import UpstreamEngine

log = logging.getLogger(__name__)


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
    if any(is_micro(name) for name, _ in resolved):  # microWakeWord models: edge.wake.micro
        return _with_micro(wake, store, list(models or wake.models), resolved, features)
    mel, emb = store.path("melspectrogram"), store.path("embedding")
    if wake.engine == "openwakeword":
        return UpstreamEngine(mel, emb, resolved, wake.threads)
    models_ = FeatureModels.load(mel, emb, wake.threads, wake.runtime)
    classifiers = [Classifier.load(name, path, wake.threads, wake.runtime)
                   for name, path in resolved]
    return StreamingEngine(features(models_) if features else models_, classifiers,
                           idle_gate_dbfs=wake.idle_gate_dbfs if wake.idle_gate else None)


def _with_micro(wake: WakeConfig, store: ModelStore, specs: list[str],
                resolved: list[tuple[str, Path]],
                features: Callable[[FeatureModels], Features] | None) -> WakeEngine:
    from edge.wake.families import JoinedEngine
    from edge.wake.micro.engine import MicroEngine

    gate = wake.idle_gate_dbfs if wake.idle_gate else None
    micro = MicroEngine([store.micro(n, p) for n, p in resolved if is_micro(n)], gate)
    others = [spec for spec, (n, _) in zip(specs, resolved, strict=True) if not is_micro(n)]
    if not others:
        return micro
    oww = build_engine(wake, store, others, features)
    return JoinedEngine([oww, micro], [n for n, _ in resolved])


def build_policy(wake: WakeConfig, names: tuple[str, ...],
                 on_run_end: Callable[[ScoreRun], None] | None = None) -> DetectionPolicy:
    models = [ModelPolicy(n, wake.threshold_for(n), wake.patience, wake.refractory_s)
              for n in names]
    if wake.combine != "off":  # a wake word both families run: one decision (edge.wake.combine)
        from edge.wake.combine import CombinedPolicy

        return CombinedPolicy(models, wake.combine, on_run_end)
    return DetectionPolicy(models, on_run_end)


def build_detector(wake: WakeConfig, store: ModelStore | None = None,
                   models: list[str] | None = None,
                   on_run_end: Callable[[ScoreRun], None] | None = None) -> Detector:
    store = store or model_store(wake)
    engine = build_engine(wake, store, models)
    wake = store.with_model_thresholds(wake, models)  # a micro model's own cutoff, unless set
    return Detector(engine, build_policy(wake, engine.model_names, on_run_end))
