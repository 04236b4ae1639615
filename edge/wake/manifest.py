"""The model manifest (models/manifest.toml): every model file, its sha256, size, licence
and the pinned wheel it comes from; and what a microWakeWord model's JSON says.

Only data and reading here, no store or engine: the model store (:mod:`edge.wake.models`),
the fetcher (:mod:`edge.wake.fetch`) and the micro engine all build on it.

>>> Manifest.load().entry("micro:okay_nabu").license  # doctest: +SKIP
'Apache-2.0'
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from edge.files import is_plain_name

FETCH_HINT = "edge models fetch"
MICRO = "micro:"
"""Prefix of a microWakeWord model's full name."""
MICRO_SUFFIXES = (".tflite", ".json")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed edge package (a wheel carries the manifest there as models_manifest.toml)."""
_REPO_MODELS = _PACKAGE_DIR.parent / "models"
SYSTEM_MODELS = Path("/var/lib/edge-recorder/models")


@dataclass(frozen=True)
class ModelEntry:
    """One model file named in the manifest."""

    name: str
    kind: str
    """``feature``, ``wakeword`` (openWakeWord), ``micro`` (microWakeWord) or ``vad``."""
    file: str
    sha256: str
    size: int
    license: str
    source: str
    origin: str = ""
    """Which wheel it comes from: '' the manifest's [source], else a key of [sources]."""
    config: str = ""
    """A micro model's JSON (wake word, probability cutoff, sliding window), beside ``file``."""
    config_sha256: str = ""
    config_size: int = 0
    check: tuple[int, ...] = ()
    """A micro model's quantized outputs over :func:`edge.wake.micro.engine.check_input`,
    as TensorFlow Lite computes them: the interpreter is checked against them at load."""
    check_state: str = ""
    """The sha256 of the model's streaming state after that input (every int8 layer output
    it keeps), as recorded when the model was added (see README, Models)."""

    def files(self) -> list[tuple[str, str, int]]:
        """(file, sha256, size) of every file of the model."""
        out = [(self.file, self.sha256, self.size)]
        if self.config:
            out.append((self.config, self.config_sha256, self.config_size))
        return out


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel models are extracted from."""

    requirement: str
    wheel: str
    sha256: str
    size: int
    member_prefix: str
    url: str
    platform: str = ""
    """``pip download --platform`` for a wheel built for one platform only (the models in it
    are not platform-specific)."""


@dataclass(frozen=True)
class MicroSpec:
    """A microWakeWord model, resolved and verified: what its JSON says."""

    name: str
    """Full name, ``micro:<stem>``."""
    wake_word: str
    tflite: Path
    json: Path
    probability_cutoff: float
    """The model's own default threshold (its authors' choice)."""
    sliding_window_size: int
    """Model steps (30 ms each) whose probabilities are averaged into one score."""
    check: tuple[int, ...] = ()
    check_state: str = ""


@dataclass(frozen=True)
class Manifest:
    """The pinned models: each file's origin, size and sha256, and the wheels they come from."""

    source: WheelSource
    models: tuple[ModelEntry, ...]
    sources: tuple[tuple[str, WheelSource], ...] = ()
    """The other wheels, by key (``origin`` of a model)."""

    def entry(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ModelError(
            f"unknown model {name!r}; known models are {', '.join(self.names())}, "
            "or give the path of an openWakeWord-format .onnx file or a microWakeWord "
            ".tflite (with its .json beside it)"
        )

    def wheel_of(self, origin: str) -> WheelSource:
        if not origin:
            return self.source
        for key, src in self.sources:
            if key == origin:
                return src
        raise ModelError(f"the model manifest names the unknown origin {origin!r}; "
                         f"known are {', '.join(k for k, _ in self.sources)}")

    def origins(self) -> list[str]:
        return [""] + [k for k, _ in self.sources]

    def names(self, kind: str | None = None) -> list[str]:
        return [m.name for m in self.models if kind is None or m.kind == kind]

    @staticmethod
    def load(path: Path | None = None) -> Manifest:
        path = path or manifest_path()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ModelError(f"cannot read the model manifest {path}: {exc}") from exc
        try:
            manifest = Manifest(
                source=WheelSource(**data["source"]),
                models=tuple(ModelEntry(**{**m, "check": tuple(m.get("check", ()))})
                             for m in data["model"]),
                sources=tuple((k, WheelSource(**v)) for k, v in data.get("sources", {}).items()),
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"the model manifest {path} is malformed: {exc}") from exc
        files = [f for m in manifest.models for f, _, _ in m.files()]
        wheels = [manifest.source.wheel] + [s.wheel for _, s in manifest.sources]
        for name in wheels + files:
            if not is_plain_name(name):  # each is joined to a folder we write in
                raise ModelError(f"the model manifest {path} names the file {name!r}; give a "
                                 "plain file name (letters, digits, _ . -)")
        for m in manifest.models:
            manifest.wheel_of(m.origin)
        return manifest


def manifest_path() -> Path:
    """The manifest shipped in the wheel, or the repository's models/manifest.toml."""
    packaged = _PACKAGE_DIR / "models_manifest.toml"
    return packaged if packaged.exists() else _REPO_MODELS / "manifest.toml"


def default_models_dir() -> Path:
    """$EDGE_MODELS_DIR, else the source checkout's models/, else /var/lib/edge-recorder/models."""
    env = os.environ.get("EDGE_MODELS_DIR")
    if env:
        return Path(env)
    if (_REPO_MODELS / "manifest.toml").exists():
        return _REPO_MODELS
    return SYSTEM_MODELS


def is_micro(name: str) -> bool:
    """Whether a resolved (full) model name is a microWakeWord model's."""
    return name.startswith(MICRO)


def read_micro_json(name: str, json_path: Path, check: tuple[int, ...] = (),
                    check_state: str = "") -> MicroSpec:
    """The spec a micro model's JSON gives; one clear line if it is not one."""
    import json

    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot read the microWakeWord config {json_path}: "
                         f"{str(exc).splitlines()[0]}; give the .json that came with the "
                         ".tflite") from None
    micro = data.get("micro") if isinstance(data, dict) else None
    tflite = data.get("model") if isinstance(data, dict) else None
    if not isinstance(micro, dict) or not isinstance(tflite, str) or not tflite:
        raise ModelError(f"{json_path} is not a microWakeWord model config (it needs \"model\" "
                         "and a \"micro\" section); give the .json that came with the .tflite")
    cutoff, window = micro.get("probability_cutoff"), micro.get("sliding_window_size")
    if (not isinstance(cutoff, int | float) or isinstance(cutoff, bool)
            or not 0.0 < float(cutoff) <= 1.0):
        raise ModelError(f"{json_path}: micro.probability_cutoff is {cutoff!r}; expected a "
                         "number in (0, 1]")
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 100:
        raise ModelError(f"{json_path}: micro.sliding_window_size is {window!r}; expected a "
                         "whole number from 1 to 100")
    path = json_path.parent / tflite
    if Path(tflite).name != tflite or path.suffix != ".tflite":
        raise ModelError(f"{json_path}: \"model\" is {tflite!r}; expected the plain name of a "
                         ".tflite file beside the .json")
    if not path.exists():
        raise ModelError(f"{json_path} names {tflite}, but {path} does not exist")
    return MicroSpec(name, str(data.get("wake_word", name)), path, json_path, float(cutoff),
                     window, check, check_state)


_HASHED: dict[tuple[int, ...], str] = {}
"""sha256 of the files this process has hashed, by (device, inode, size, mtime, ctime): the
store checks a model's hash and the runtime then looks its reference output up by the same
hash; one read of the file does for both. A file rewritten since has another key."""
_HASHING: dict[tuple[int, ...], threading.Event] = {}
"""Files :func:`prehash` is hashing now: a caller wanting one waits rather than reads it too."""
_LOCK = threading.Lock()
SETTLED_S = 2.0
"""Only a file unchanged for this long is remembered: file times tick coarsely (a few ms),
so a file rewritten within one tick of being hashed could keep its key (git's racy-clean
rule). Installed models are far older than that."""


def _key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: Path) -> str:
    st = path.stat()
    key = _key(st)
    with _LOCK:
        digest = _HASHED.get(key)
        busy = _HASHING.get(key) if digest is None else None
    if busy is not None:
        busy.wait()
        with _LOCK:
            digest = _HASHED.get(key)
    return digest if digest is not None else _hash(path, st, key)


def _hash(path: Path, st: os.stat_result, key: tuple[int, ...]) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if time.time() - max(st.st_mtime, st.st_ctime) > SETTLED_S:
        with _LOCK:
            if len(_HASHED) >= 256:  # a process that hashes many files (fetch, tests) keeps few
                _HASHED.clear()
            _HASHED[key] = digest
    return digest


def prehash(paths: list[Path]) -> threading.Thread:
    """Hash ``paths`` on a thread of their own, for :func:`sha256_file` to find later.

    The daemon's start-up: the model files are hashed (reading and hashing release the GIL)
    on the second core while the main thread imports its modules: about 7 ms of hashing,
    which took about 4 ms off the 0.15 s to the first scored frame. A missing or unreadable
    file is skipped: whoever needs it meets the error.
    """
    todo: list[tuple[Path, os.stat_result, tuple[int, ...], threading.Event]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        key = _key(st)
        with _LOCK:
            if key in _HASHED or key in _HASHING:
                continue
            done = _HASHING[key] = threading.Event()
        todo.append((path, st, key, done))

    def work() -> None:
        for path, st, key, done in todo:
            try:
                _hash(path, st, key)
            except OSError:
                pass
            finally:
                with _LOCK:
                    del _HASHING[key]
                done.set()

    thread = threading.Thread(target=work, name="prehash", daemon=True)
    thread.start()
    return thread
