"""The wake words an assistant may choose among: every installed model, of both families.

Home Assistant asks which wake words the device has (its wake-word select lists them) and
chooses the active ones. The ids are the model store's full names (``hey_jarvis``,
``micro:okay_nabu``): every installed wake-word model, then any configured model the store
does not hold (a custom ``.onnx``). A choice with an id not in that list, or none, or more
than ``max_active``, is refused whole: nothing changes. An accepted choice builds its
detector off the audio thread (the models load from disk), then hands it to the audio loop
through its ``Commands``: from the next frame on, the recorder listens for the new words.

>>> words = WakeWords(cfg.wake, store, ("hey_jarvis",), commands)      # doctest: +SKIP
>>> words.refusal(["micro:okay_nabu"])                                  # doctest: +SKIP
''
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge.config import WakeConfig
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Commands
from edge.wake.detector import Detector, build_detector
from edge.wake.models import ModelStore
from edge.wake.policy import ScoreRun

WAKE_WORD_KINDS = ("wakeword", "micro")
"""The manifest's kinds of wake-word model (the others are shared parts: features, VAD)."""


class WakeWords:
    """The choosable wake words and the active ones (the API server's loop thread)."""

    def __init__(self, wake: WakeConfig, store: ModelStore, active: Sequence[str],
                 commands: Commands,
                 on_run_end: Callable[[ScoreRun], None] | None = None) -> None:
        self.wake = wake
        self.store = store
        self.commands = commands
        self.on_run_end = on_run_end
        self.active = tuple(active)
        self.max_active = max(1, len(self.active))
        """As many as the owner configured to run together: each costs CPU."""
        self._specs = {store.resolve(spec)[0]: spec for spec in wake.models}
        """Id -> how the config names it (a custom model's path), for the ones it names."""
        manifest = store.manifest
        installed = [n for n in manifest.names() if manifest.entry(n).kind in WAKE_WORD_KINDS
                     and store.status(n).state == "ok"]
        self.available = tuple(installed + [n for n in (*self._specs, *self.active)
                                            if n not in installed])

    def refusal(self, ids: Sequence[str]) -> str:
        """Why ``ids`` may not be chosen; '' when they may."""
        if not ids:
            return "no wake word: the device would never wake"
        unknown = [i for i in ids if i not in self.available]
        if unknown:
            return (f"not installed here: {', '.join(map(repr, unknown))}; the installed "
                    f"wake words are {', '.join(self.available)}")
        if len(ids) > self.max_active:
            return f"{len(ids)} wake words, more than the {self.max_active} this device runs"
        return ""

    def build(self, ids: Sequence[str]) -> Detector:
        """The detector for ``ids`` (blocking: the models load; not on the audio thread)."""
        return build_detector(self.wake, self.store, [self._specs.get(i, i) for i in ids],
                              self.on_run_end)

    def use(self, ids: Sequence[str], detector: Detector) -> None:
        """Listen for ``ids`` (with their built ``detector``) from the audio loop's next
        command on."""
        def swap(recorder: Recorder) -> None:
            recorder.use_detector(detector.engine, detector.policy)

        self.commands.post(swap)
        self.active = tuple(ids)
