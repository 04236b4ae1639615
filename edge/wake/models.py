"""The model store: installed models checked against the manifest, and every model name
resolved, for both model families.

The manifest (:mod:`edge.wake.manifest`, models/manifest.toml) names every model file
with its sha256 and size. ``fetch`` (:mod:`edge.wake.fetch`) installs them from the
pinned wheels, refusing any mismatch; a file is only ever moved into place after it has
been verified, so nothing is half-installed.

Two families: openWakeWord classifiers (``hey_jarvis``, an ``.onnx`` path) and
microWakeWord models (``micro:okay_nabu``, a ``.tflite`` or its ``.json`` path). A
bare name known to one family only resolves to it (``okay_nabu``); a bare name both
know (``alexa``) stays the openWakeWord model, as before micro models existed.
Every name is resolved here, once: the engine, ``edge config check`` and the tools
all ask :meth:`ModelStore.resolve`.

>>> store = ModelStore.default()
>>> store.resolve("okay_nabu")  # doctest: +SKIP
('micro:okay_nabu', PosixPath('.../models/okay_nabu.json'))
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.config import WakeConfig, replace
from edge.config.rules import THRESHOLD_FLOOR
from edge.errors import ModelError
from edge.wake.manifest import (
    FETCH_HINT,
    MICRO,
    MICRO_SUFFIXES,
    Manifest,
    MicroSpec,
    ModelEntry,
    WheelSource,
    default_models_dir,
    is_micro,
    manifest_path,
    prehash,
    read_micro_json,
    sha256_file,
)

__all__ = ["FETCH_HINT", "MICRO", "Manifest", "MicroSpec", "ModelEntry", "ModelStatus",
           "ModelStore", "WheelSource", "default_models_dir", "is_micro", "manifest_path",
           "model_store", "read_micro_json", "sha256_file", "VAD_MODEL"]

log = logging.getLogger(__name__)

VAD_MODEL = "silero_vad"
"""The voice-activity model every recording ends by."""
LOADED_WITH_ANY = ("melspectrogram", "embedding", VAD_MODEL)
"""The models every openWakeWord engine and every recording load, whatever the wake words."""


@dataclass(frozen=True)
class ModelStatus:
    """One manifest model as installed: its entry, its path and whether the file is there and
    intact."""

    entry: ModelEntry
    path: Path
    state: str
    """``ok``, ``missing`` or ``corrupt``."""


class ModelStore:
    """Installed models in one directory, checked against the manifest."""

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest

    @classmethod
    def default(cls, directory: Path | None = None) -> ModelStore:
        return cls(directory or default_models_dir(), Manifest.load())

    def status(self, name: str) -> ModelStatus:
        entry = self.manifest.entry(name)
        state = "ok"
        for file, sha, size in entry.files():
            p = self.directory / file
            if not p.exists():
                state = "missing"
                break
            if p.stat().st_size != size or sha256_file(p) != sha:
                state = "corrupt"
        return ModelStatus(entry, self.directory / entry.file, state)

    def prehash(self, names: tuple[str, ...] | list[str]) -> threading.Thread:
        """Start hashing the files of these models, and of :data:`LOADED_WITH_ANY`, on a
        thread of their own (:func:`~edge.wake.manifest.prehash`): the checks that follow
        find them hashed. A name this store does not know is left for them to refuse."""
        paths = []
        for name in (*names, *LOADED_WITH_ANY):
            if name.endswith(".onnx"):  # the user's own classifier: hashed for its reference
                paths.append(Path(name).expanduser())
                continue
            try:
                full = self.full_name(name)
            except ModelError:
                continue
            if full in self.manifest.names():
                paths += [self.directory / f for f, _, _ in self.manifest.entry(full).files()]
        return prehash(paths)

    def path(self, name: str) -> Path:
        """The verified path of a manifest model; a clear error if missing or corrupt."""
        st = self.status(name)
        if st.state == "missing":
            raise ModelError(
                f"model {name!r} is not installed: {st.path} does not exist. "
                f"Run `{FETCH_HINT}` to install it."
            )
        if st.state == "corrupt":
            raise ModelError(
                f"model {name!r} at {st.path} is corrupt (its sha256 does not match the "
                f"manifest). Run `{FETCH_HINT}` to replace it."
            )
        return st.path

    def resolve(self, name_or_path: str) -> tuple[str, Path]:
        """(full name, path) of a manifest name, a user's own .onnx classifier, or a
        microWakeWord model (its .json path): ``micro:okay_nabu``, ``okay_nabu``, a .tflite
        or .json path. A micro model's JSON and graph are read and checked here."""
        if Path(name_or_path).suffix in MICRO_SUFFIXES:
            spec = self._micro_path(Path(name_or_path).expanduser())
            return spec.name, spec.json
        if name_or_path.endswith(".onnx") or os.sep in name_or_path:
            p = Path(name_or_path).expanduser()
            if not p.exists():
                raise ModelError(f"custom model file {p} does not exist")
            return p.stem, p
        name = self.full_name(name_or_path)
        if is_micro(name):
            spec = self.micro(name, self.path(name))
            return spec.name, spec.json
        return name, self.path(name)

    def full_name(self, name: str) -> str:
        """A manifest name in full: a bare name known to one family only becomes that family's
        (``okay_nabu`` -> ``micro:okay_nabu``); any other name is returned as it is."""
        names = self.manifest.names()
        if name in names:
            return name
        if is_micro(name):
            micro = [n for n in names if is_micro(n)]
            raise ModelError(f"unknown model {name!r}; known microWakeWord models are "
                             f"{', '.join(micro) or 'none'}, or give the path of a .tflite")
        if MICRO + name in names:
            return MICRO + name
        return name  # entry() names every known model in its refusal

    def with_model_thresholds(self, wake: WakeConfig, models: list[str] | None = None
                              ) -> WakeConfig:
        """``wake`` with each micro model's own ``probability_cutoff`` (never below the
        threshold floor) as its threshold, where ``thresholds`` sets none for it (by full
        name, or as the model was named). ``threshold`` is the openWakeWord models' default."""
        thresholds = dict(wake.thresholds)
        for spec in models or wake.models:
            name, path = self.resolve(spec)
            if not is_micro(name) or name in thresholds:
                continue
            thresholds[name] = (thresholds[spec] if spec in thresholds else
                                max(self.micro(name, path).probability_cutoff, THRESHOLD_FLOOR))
        return wake if thresholds == dict(wake.thresholds) else replace(wake, thresholds=thresholds)

    def micro(self, name: str, path: Path) -> MicroSpec:
        """The spec of a resolved micro model (``resolve``'s name and path), graph checked."""
        if name in self.manifest.names():
            entry = self.manifest.entry(name)
            json_path = self.directory / entry.config
            if path not in (json_path, self.directory / entry.file):
                return self._micro_path(path)
            spec = read_micro_json(name, json_path, entry.check, entry.check_state)
            if spec.tflite.name != entry.file:
                raise ModelError(f"{json_path} names {spec.tflite.name}, but the manifest "
                                 f"pairs it with {entry.file}; run `{FETCH_HINT}`")
            return spec
        return self._micro_path(path)

    def _micro_path(self, path: Path) -> MicroSpec:
        """A user's own micro model: a .tflite with its .json beside it, or the .json."""
        json_path = path if path.suffix == ".json" else path.with_suffix(".json")
        if path.suffix == ".tflite" and not path.exists():
            raise ModelError(f"custom model file {path} does not exist")
        if not json_path.exists():
            raise ModelError(f"microWakeWord model {path} has no {json_path.name} beside it; "
                             "give the .json that came with the .tflite")
        spec = read_micro_json(MICRO + (path.stem if path.suffix == ".tflite" else
                                        json_path.stem), json_path)
        if path.suffix == ".tflite" and spec.tflite.resolve() != path.resolve():
            raise ModelError(f"{json_path} names {spec.tflite.name}, not {path.name}; give the "
                             "model's own .json")
        from edge.wake.micro.engine import check_graph

        check_graph(spec)
        return spec

    def fetch(self, source: Path | None = None) -> list[Path]:
        """Install every manifest model, verified; ``source`` is a local folder (holding the
        wheels or the model files) or one of the manifest's wheels (its models only)."""
        from edge.wake.fetch import fetch

        return fetch(self.manifest, self.directory, source)


def model_store(wake: WakeConfig) -> ModelStore:
    """The store ``[wake]`` names (``models_dir``), else the default one."""
    return ModelStore.default(Path(wake.models_dir).expanduser() if wake.models_dir else None)
