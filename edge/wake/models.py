"""The model manifest, and fetching and verifying the openWakeWord ONNX models.

The manifest (models/manifest.toml) names every model file with its sha256 and
size. ``fetch`` installs them from the pinned wheel, refusing any mismatch; a
file is only ever moved into place after it has been verified, so nothing is
half-installed.

>>> store = ModelStore.default()
>>> store.path("hey_jarvis")  # doctest: +SKIP
PosixPath('.../models/hey_jarvis_v0.1.onnx')
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from edge.files import fsync_dir, is_plain_name

log = logging.getLogger(__name__)

FETCH_HINT = "edge models fetch"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed edge package (a wheel carries the manifest there as models_manifest.toml)."""
_REPO_MODELS = _PACKAGE_DIR.parent / "models"
SYSTEM_MODELS = Path("/var/lib/edge-recorder/models")


@dataclass(frozen=True)
class ModelEntry:
    """One model file named in the manifest."""

    name: str
    kind: str
    """``feature``, ``wakeword`` or ``vad``."""
    file: str
    sha256: str
    size: int
    license: str
    source: str


@dataclass(frozen=True)
class WheelSource:
    """The pinned wheel the models are extracted from."""

    requirement: str
    wheel: str
    sha256: str
    size: int
    member_prefix: str
    url: str


@dataclass(frozen=True)
class Manifest:
    source: WheelSource
    models: tuple[ModelEntry, ...]

    def entry(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ModelError(
            f"unknown model {name!r}; known models are {', '.join(self.names())}, "
            "or give the path of an openWakeWord-format .onnx file"
        )

    def names(self, kind: str | None = None) -> list[str]:
        return [m.name for m in self.models if kind is None or m.kind == kind]

    @staticmethod
    def load(path: Path | None = None) -> Manifest:
        path = path or manifest_path()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ModelError(f"cannot read the model manifest {path}: {exc}") from exc
        manifest = Manifest(
            source=WheelSource(**data["source"]),
            models=tuple(ModelEntry(**m) for m in data["model"]),
        )
        for name in [manifest.source.wheel] + [m.file for m in manifest.models]:
            if not is_plain_name(name):  # each is joined to a folder we write in
                raise ModelError(f"the model manifest {path} names the file {name!r}; give a "
                                 "plain file name (letters, digits, _ . -)")
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
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
        path = self.directory / entry.file
        if not path.exists():
            state = "missing"
        elif path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            state = "corrupt"
        else:
            state = "ok"
        return ModelStatus(entry, path, state)

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
        """A manifest name, or the path of a user's own .onnx classifier."""
        if name_or_path.endswith(".onnx") or os.sep in name_or_path:
            p = Path(name_or_path).expanduser()
            if not p.exists():
                raise ModelError(f"custom model file {p} does not exist")
            return p.stem, p
        return name_or_path, self.path(name_or_path)

    def fetch(self, source: Path | None = None) -> list[Path]:
        """Install every manifest model, verified; ``source`` is a local wheel or folder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=self.directory) as tmp:
            staging = Path(tmp)
            if source is None:
                wheel = self._download_wheel(staging)
                self._extract(wheel, staging)
            elif source.is_dir():
                self._copy_from_dir(source, staging)
            else:
                self._check_wheel(source)
                self._extract(source, staging)
            for m in self.manifest.models:
                self._verify_staged(staging / m.file, m)
            installed = []
            for m in self.manifest.models:
                target = self.directory / m.file
                os.replace(staging / m.file, target)
                installed.append(target)
            fsync_dir(self.directory)
        return installed

    def _download_wheel(self, staging: Path) -> Path:
        src = self.manifest.source
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(staging), src.requirement]
        log.info("downloading %s through pip", src.requirement)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = staging / src.wheel
        if proc.returncode != 0 or not wheel.exists():
            raise ModelError(
                f"pip could not download {src.requirement}: {proc.stderr.strip()[-400:]}. "
                "On a machine without network, copy the wheel over and run "
                "`edge models fetch --from PATH`."
            )
        self._check_wheel(wheel)
        return wheel

    def _check_wheel(self, wheel: Path) -> None:
        src = self.manifest.source
        if not wheel.exists():
            raise ModelError(f"{wheel} does not exist; expected the wheel {src.wheel}")
        digest = sha256_file(wheel)
        if digest != src.sha256:
            raise ModelError(
                f"refusing {wheel}: its sha256 is {digest}, but the manifest pins "
                f"{src.wheel} to {src.sha256}. Nothing was installed."
            )

    def _extract(self, wheel: Path, staging: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf:
                for m in self.manifest.models:
                    member = self.manifest.source.member_prefix + m.file
                    try:
                        with zf.open(member) as src, (staging / m.file).open("wb") as dst:
                            shutil.copyfileobj(src, dst)
                    except KeyError:
                        raise ModelError(
                            f"{wheel} has no {member}; is it the right wheel?") from None
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{wheel} is not a valid wheel: {exc}") from exc

    def _copy_from_dir(self, folder: Path, staging: Path) -> None:
        wheel = folder / self.manifest.source.wheel
        if wheel.exists():
            self._check_wheel(wheel)
            self._extract(wheel, staging)
            return
        for m in self.manifest.models:
            candidate = folder / m.file
            if not candidate.exists():
                raise ModelError(
                    f"{folder} holds neither {self.manifest.source.wheel} nor {m.file}; "
                    "give the folder that holds the wheel or the model files"
                )
            shutil.copyfile(candidate, staging / m.file)

    @staticmethod
    def _verify_staged(path: Path, m: ModelEntry) -> None:
        if not path.exists():
            raise ModelError(f"{m.file} was not found in the source; nothing was installed")
        digest = sha256_file(path)
        if path.stat().st_size != m.size or digest != m.sha256:
            raise ModelError(
                f"refusing {m.file}: sha256 {digest} ({path.stat().st_size} bytes) does not "
                f"match the manifest's {m.sha256} ({m.size} bytes). Nothing was installed."
            )
        with path.open("rb") as f:
            os.fsync(f.fileno())

