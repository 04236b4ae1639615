"""Both model families at once: one engine over an openWakeWord and a microWakeWord engine.

Each family keeps its own front end and streams; the joined engine hands every frame to
each and puts their scores side by side, in the order the models were named.

>>> engine = JoinedEngine([oww_engine, micro_engine], order)  # doctest: +SKIP
>>> engine.model_names  # doctest: +SKIP
('hey_jarvis', 'micro:okay_nabu')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.wake.engine import WakeEngine


class JoinedEngine:
    """Several engines as one :class:`~edge.wake.engine.WakeEngine`."""

    def __init__(self, engines: Sequence[WakeEngine], order: Sequence[str]) -> None:
        self.engines = list(engines)
        names = [n for e in self.engines for n in e.model_names]
        if sorted(names) != sorted(order):
            raise ValueError(f"the engines run {names}, not {list(order)}")
        self._order = np.array([names.index(n) for n in order])
        self._names = tuple(order)

    @property
    def model_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def frames_skipped(self) -> int:
        """Frames the first engine's idle gate skipped (each engine gates on the same level)."""
        return int(getattr(self.engines[0], "frames_skipped", 0))

    def process(self, frame: np.ndarray) -> np.ndarray:
        scores: np.ndarray = np.concatenate([e.process(frame) for e in self.engines])
        return scores[self._order]

    def reset(self) -> None:
        for e in self.engines:
            e.reset()

    def zero(self) -> None:
        for e in self.engines:
            e.zero()
