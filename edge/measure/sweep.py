"""The threshold sweep: the device's detection policy, once per threshold, over stored scores.

One pass over the audio gives every frame's scores; each threshold then only
replays :class:`edge.wake.policy.DetectionPolicy` over them, with the device's
patience and refractory grouping (built by :func:`edge.wake.detector.build_policy`), so
one utterance counts once, exactly as the device would count it.

Rates, per model and threshold:

* false accepts per hour: activations on the negatives / hours of negative audio;
* miss rate: positive utterances (of that model) with no activation / positives.

Miss rate at a target false-accept rate (say 0.1 per hour, one per 10 h): the
sweep's lowest threshold whose false accepts per hour are at or below the
target, and the miss rate there. No interpolation: a threshold that was not
swept is not reported. False accepts only fall as the threshold rises, so this
is the best miss rate the sweep shows within the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from edge.config import WakeConfig
from edge.wake.detector import build_policy
from edge.wake.policy import Detection, DetectionPolicy, ModelPolicy

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""0.05 to 0.95 in steps of 0.05 (the device's own threshold is always added)."""


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    activations: int
    """Activations on the negatives."""
    false_accepts_per_hour: float | None
    """None when there is no negative audio."""
    positives: int
    misses: int
    miss_rate: float | None
    """None when there are no positives for the model."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def policy_at(wake: WakeConfig, names: tuple[str, ...], model: str,
              threshold: float) -> ModelPolicy:
    """The device's policy for ``model`` with its threshold set to ``threshold``."""
    policy = build_policy(wake, names)
    base = policy.models[names.index(model)]
    return replace(base, threshold=threshold)


def activations(scores: np.ndarray, model: ModelPolicy) -> list[Detection]:
    """Detections of one model's per-frame scores, as ``edge.wake.policy.detections_over`` gives.

    Only frames at or above the threshold, and the frame after each, are fed to
    the policy: a frame below the threshold that follows another one leaves the
    policy as it was, so skipping it changes nothing (tests hold this against
    ``detections_over``).
    """
    column = np.asarray(scores, dtype=np.float64).reshape(-1)
    over = column >= model.threshold  # in float64, as DetectionPolicy.step compares
    fed = over.copy()
    fed[1:] |= over[:-1]
    policy = DetectionPolicy([model])
    out: list[Detection] = []
    for i in np.flatnonzero(fed):
        out += policy.step(column[i:i + 1], int(i))
    return out


def sweep(negatives: Sequence[np.ndarray], positives: Sequence[np.ndarray],
          policies: Sequence[ModelPolicy], negative_hours: float) -> list[SweepPoint]:
    """One point per policy (threshold): ``negatives`` and ``positives`` are score columns."""
    points = []
    for p in policies:
        acts = sum(len(activations(s, p)) for s in negatives)
        misses = sum(1 for s in positives if not activations(s, p))
        points.append(SweepPoint(
            p.threshold, acts,
            round(acts / negative_hours, 6) if negative_hours > 0 else None,
            len(positives), misses,
            round(misses / len(positives), 6) if positives else None,
        ))
    return points


def at_target(points: Sequence[SweepPoint], fa_per_hour: float) -> SweepPoint | None:
    """The lowest swept threshold with at most ``fa_per_hour`` false accepts per hour."""
    ok = [p for p in points
          if p.false_accepts_per_hour is not None and p.false_accepts_per_hour <= fa_per_hour]
    return min(ok, key=lambda p: p.threshold) if ok else None


def thresholds_for(given: Sequence[float] | None, device: Sequence[float]) -> list[float]:
    """The sweep: the given thresholds (else the defaults) plus the device's, sorted."""
    base = list(given) if given else list(DEFAULT_THRESHOLDS)
    return sorted({round(t, 6) for t in [*base, *device]})
