"""Two families, one decision: a wake word both families know, combined (``wake.combine``).

``alexa`` (openWakeWord) and ``micro:alexa`` (microWakeWord) are a pair. With ``any`` a
detection of either wakes the device once: the partner's detection of the same utterance
(within :data:`WINDOW_S`) is dropped. With ``both`` a detection wakes the device only when
the partner detected too within :data:`WINDOW_S`; the later of the two is the wake. Models
without a partner, and every model with ``off``, go through as before. The two families
miss different people, so ``any`` misses fewer; they false-wake on different sounds, so
``both`` false-wakes less.

>>> p = CombinedPolicy([ModelPolicy("alexa"), ModelPolicy("micro:alexa")], "both")
>>> p.step(np.array([0.9, 0.1]), 10), len(p.step(np.array([0.9, 0.9]), 12))
([], 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge.audio.frames import FRAME_S
from edge.wake.manifest import MICRO
from edge.wake.policy import Detection, DetectionPolicy, ModelPolicy, ScoreRun

WINDOW_S = 1.0
"""How far apart (s) the two families' detections of one utterance may be."""
MODES = ("off", "any", "both")


def partners(names: Sequence[str]) -> dict[str, str]:
    """Each model whose wake word the other family also runs, to that other model."""
    out = {}
    for n in names:
        if n.startswith(MICRO) and n[len(MICRO):] in names:
            out[n], out[n[len(MICRO):]] = n[len(MICRO):], n
    return out


class CombinedPolicy(DetectionPolicy):
    """The detection policy, then the combination of each pair's detections."""

    def __init__(self, models: Sequence[ModelPolicy], mode: str,
                 on_run_end: Callable[[ScoreRun], None] | None = None,
                 window_s: float = WINDOW_S) -> None:
        if mode not in MODES:
            raise ValueError(f"combine mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        self.window = round(window_s / FRAME_S)
        self._partner = partners([m.model for m in models])
        self._last: dict[str, int] = {}
        """Frame of each model's latest detection (``both``) or wake (``any``)."""
        super().__init__(models, on_run_end)

    def reset(self) -> None:
        super().reset()
        self._last = {}

    def step(self, scores: np.ndarray, frame_index: int) -> list[Detection]:
        found = super().step(scores, frame_index)
        if self.mode == "off":
            return found
        out = []
        for d in found:
            partner = self._partner.get(d.model)
            if partner is None:
                out.append(d)
                continue
            seen = self._last.get(partner)
            near = seen is not None and frame_index - seen <= self.window
            if self.mode == "any":
                if not near:  # else the partner already woke for this utterance
                    out.append(d)
                    self._last[d.model] = frame_index
            elif near:
                out.append(d)
                del self._last[partner]
            else:
                self._last[d.model] = frame_index
        return out


def compare_modes(make_policy: Callable[[str], DetectionPolicy], names: Sequence[str],
                  negatives: Sequence[np.ndarray], hours: float,
                  positives: Sequence[tuple[np.ndarray, Sequence[str]]]) -> list[dict[str, object]]:
    """Each mode's false accepts per hour and miss rate, side by side: per model with
    ``off``, per pair with ``any`` and ``both``. ``negatives`` and ``positives`` are score
    matrices (frames, models) in ``names`` order; a positive names the models it is for."""
    pairs = sorted({tuple(sorted((a, b))) for a, b in partners(names).items()})
    rows: list[dict[str, object]] = []
    for mode in MODES:
        groups: list[tuple[str, ...]] = ([(m,) for m in names] if mode == "off"
                                         else [tuple(p) for p in pairs])
        for group in groups:
            fa = sum(_fired(make_policy(mode), s, group) for s in negatives)
            mine = [s for s, targets in positives if set(targets) & set(group)]
            missed = sum(_fired(make_policy(mode), s, group) == 0 for s in mine)
            rows.append({"mode": mode, "models": "+".join(group), "false_accepts": fa,
                         "false_accepts_per_hour": round(fa / hours, 3) if hours else None,
                         "positives": len(mine), "missed": missed,
                         "miss_rate": round(missed / len(mine), 4) if mine else None})
    return rows


def _fired(policy: DetectionPolicy, scores: np.ndarray, group: Sequence[str]) -> int:
    return sum(d.model in group for i in range(len(scores)) for d in policy.step(scores[i], i))
