"""Detection through the openwakeword package itself (``engine = "openwakeword"``).

The reference the lean :class:`~edge.wake.engine.StreamingEngine` is checked against in
the parity tests and benchmarks. It is an optional extra (``edge-recorder[openwakeword]``)
and heavier: it pulls in scikit-learn and scipy, so it is imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio.frames import check_frame
from edge.errors import ModelError


class UpstreamEngine:
    """Detection through the openwakeword package itself (``engine = "openwakeword"``).

    Installed as the optional extra ``edge-recorder[openwakeword]``. Heavier: it
    pulls in scikit-learn and scipy.
    """

    def __init__(self, mel_path: Path, emb_path: Path, classifiers: list[tuple[str, Path]],
                 threads: int = 1) -> None:
        try:
            from openwakeword.model import Model
        except ImportError as exc:
            raise ModelError(
                "engine = \"openwakeword\" needs the openwakeword package; install it with "
                "`.venv/bin/pip install -e '.[openwakeword]'` in the checkout, or set "
                "engine = \"edge\""
            ) from exc
        self._names = tuple(n for n, _ in classifiers)
        self._args = dict(
            wakeword_models=[str(p) for _, p in classifiers], inference_framework="onnx",
            melspec_model_path=str(mel_path), embedding_model_path=str(emb_path), ncpu=threads,
        )
        self._model_cls = Model
        self.reset()

    @property
    def model_names(self) -> tuple[str, ...]:
        return self._names

    def reset(self) -> None:
        self._model = self._model_cls(**self._args)
        self._keys = list(self._model.models.keys())

    def zero(self) -> None:
        self.reset()

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        pred = self._model.predict(frame)
        return np.array([pred[k] for k in self._keys], dtype=np.float32)
