"""Where a model runs: numpy for the stock models, onnxruntime for any other.

:func:`load_model` gives a model called as an onnxruntime session is (``get_inputs``,
``get_outputs``, ``run(None, feeds)``). With ``runtime="auto"`` a model file whose
reference output is recorded in :mod:`edge.wake.golden` runs on numpy
(:mod:`edge.wake.melspec`, :mod:`edge.wake.embedding`, :mod:`edge.wake.dense`,
:mod:`edge.wake.numpy_graph`) once its numpy version reproduces that output, so
onnxruntime is never imported for them; anything else runs on onnxruntime.

>>> mel = load_model(Path("models/melspectrogram.onnx"), "melspectrogram")
>>> on_numpy(mel)  # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.errors import ModelError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

log = logging.getLogger(__name__)


RUNTIMES = ("auto", "onnxruntime")
"""``auto``: numpy for the models with recorded reference output, else onnxruntime."""


class Model(Protocol):
    """A loaded model, called as an onnxruntime session is (which is one such model)."""

    def get_inputs(self) -> Sequence[Any]: ...

    def get_outputs(self) -> Sequence[Any]: ...

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def load_model(path: Path, kind: str, threads: int = 1, runtime: str = "auto") -> Model:
    """The model in ``path`` (a :data:`edge.wake.golden.KINDS` kind), on numpy when
    ``runtime`` is ``auto`` and the file's reference output is recorded and matched."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown model runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        model = _numpy_model(path, kind)
        if model is not None:
            return model
    return _session(path, threads)


def _numpy_model(path: Path, kind: str) -> Model | None:
    from edge.wake import golden
    from edge.wake.dense import DenseClassifier
    from edge.wake.embedding import WindowEmbedding, limit_blas_threads, parse_layers
    from edge.wake.manifest import sha256_file
    from edge.wake.melspec import MelSpectrogram
    from edge.wake.numpy_graph import NumpyGraph

    try:
        sha = sha256_file(path)
    except OSError:
        return None  # onnxruntime names the problem
    if sha not in golden.REFERENCES:
        log.info("%s runs on onnxruntime: no reference output is recorded for it", path.name)
        return None
    limit_blas_threads(1)  # small matrix products: BLAS threads only spin
    model: Model
    try:
        if kind == "embedding":
            model = WindowEmbedding(parse_layers(path))
        elif kind == "melspectrogram":
            model = MelSpectrogram.load(path)
        elif kind == "classifier":
            model = DenseClassifier.load(path)
        else:
            model = NumpyGraph.load(path)
    except ModelError as exc:
        log.warning("%s runs on onnxruntime: %s", path.name, exc)
        return None
    why = golden.check(path, kind, model, sha)
    if why is not None:
        log.warning("%s runs on onnxruntime: %s", path.name, why)
        return None
    return model


def on_numpy(model: object) -> bool:
    """Whether ``model`` runs on numpy (not on onnxruntime)."""
    from edge.wake.dense import DenseClassifier
    from edge.wake.embedding import WindowEmbedding
    from edge.wake.melspec import MelSpectrogram
    from edge.wake.numpy_graph import NumpyGraph

    return isinstance(model, NumpyGraph | WindowEmbedding | MelSpectrogram | DenseClassifier)


def _session(path: Path, threads: int) -> InferenceSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(
            f"cannot load model {path}: {str(exc).splitlines()[0]}. "
            "If it is a manifest model, run `edge models fetch` to reinstall it."
        ) from exc
