"""Installing the manifest's models: from the pinned wheels through pip, or from a local
folder or wheel, every file verified (sha256 and size) in a staging folder beside the
models before any is moved into place, so nothing is ever half-installed.

>>> fetch(Manifest.load(), Path("models"))  # doctest: +SKIP
[PosixPath('models/melspectrogram.onnx'), ...]
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edge.errors import ModelError
from edge.files import fsync_dir
from edge.wake.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)


def fetch(manifest: Manifest, directory: Path, source: Path | None = None) -> list[Path]:
    """Install the models into ``directory``; the paths installed."""
    return _Fetch(manifest, directory).fetch(source)


class _Fetch:
    def __init__(self, manifest: Manifest, directory: Path) -> None:
        self.manifest = manifest
        self.directory = directory

    def fetch(self, source: Path | None = None) -> list[Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=self.directory) as tmp:
            staging = Path(tmp)
            origins = self._stage(source, staging)
            models = [m for m in self.manifest.models if m.origin in origins]
            for m in models:
                for file, sha, size in m.files():
                    self._verify_staged(staging / file, file, sha, size)
            installed = []
            for m in models:
                for file, _, _ in m.files():
                    os.replace(staging / file, self.directory / file)
                    installed.append(self.directory / file)
            fsync_dir(self.directory)
        return installed

    def _stage(self, source: Path | None, staging: Path) -> list[str]:
        """Put the files of some origins' models in ``staging``; those origins."""
        origins = self.manifest.origins()
        if source is None:
            for o in origins:
                self._extract(o, self._download_wheel(o, staging), staging)
            return origins
        if source.is_dir():
            for o in origins:
                self._copy_from_dir(o, source, staging)
            return origins
        if not source.exists():
            raise ModelError(f"{source} does not exist; expected a folder or one of the wheels "
                             f"{', '.join(self.manifest.wheel_of(o).wheel for o in origins)}")
        named = [o for o in origins if self.manifest.wheel_of(o).wheel == source.name]
        origin = named[0] if named else ""
        self._check_wheel(origin, source)
        self._extract(origin, source, staging)
        return [origin]

    def _download_wheel(self, origin: str, staging: Path) -> Path:
        src = self.manifest.wheel_of(origin)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(staging), src.requirement]
        if src.platform:
            cmd[5:5] = ["--platform", src.platform]
        log.info("downloading %s through pip", src.requirement)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = staging / src.wheel
        if proc.returncode != 0 or not wheel.exists():
            raise ModelError(
                f"pip could not download {src.requirement}: {proc.stderr.strip()[-400:]}. "
                "On a machine without network, copy the wheel over and run "
                "`edge models fetch --from PATH`."
            )
        self._check_wheel(origin, wheel)
        return wheel

    def _check_wheel(self, origin: str, wheel: Path) -> None:
        src = self.manifest.wheel_of(origin)
        if not wheel.exists():
            raise ModelError(f"{wheel} does not exist; expected the wheel {src.wheel}")
        digest = sha256_file(wheel)
        if digest != src.sha256:
            raise ModelError(
                f"refusing {wheel}: its sha256 is {digest}, but the manifest pins "
                f"{src.wheel} to {src.sha256}. Nothing was installed."
            )

    def _extract(self, origin: str, wheel: Path, staging: Path) -> None:
        prefix = self.manifest.wheel_of(origin).member_prefix
        try:
            with zipfile.ZipFile(wheel) as zf:
                for m in self.manifest.models:
                    if m.origin != origin:
                        continue
                    for file, _, _ in m.files():
                        member = prefix + file
                        try:
                            with zf.open(member) as src, (staging / file).open("wb") as dst:
                                shutil.copyfileobj(src, dst)
                        except KeyError:
                            raise ModelError(
                                f"{wheel} has no {member}; is it the right wheel?") from None
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{wheel} is not a valid wheel: {exc}") from exc

    def _copy_from_dir(self, origin: str, folder: Path, staging: Path) -> None:
        wheel = folder / self.manifest.wheel_of(origin).wheel
        if wheel.exists():
            self._check_wheel(origin, wheel)
            self._extract(origin, wheel, staging)
            return
        for m in self.manifest.models:
            if m.origin != origin:
                continue
            for file, _, _ in m.files():
                candidate = folder / file
                if not candidate.exists():
                    raise ModelError(
                        f"{folder} holds neither {wheel.name} nor {file}; "
                        "give the folder that holds the wheels or the model files"
                    )
                shutil.copyfile(candidate, staging / file)

    @staticmethod
    def _verify_staged(path: Path, file: str, sha: str, size: int) -> None:
        if not path.exists():
            raise ModelError(f"{file} was not found in the source; nothing was installed")
        digest = sha256_file(path)
        if path.stat().st_size != size or digest != sha:
            raise ModelError(
                f"refusing {file}: sha256 {digest} ({path.stat().st_size} bytes) does not "
                f"match the manifest's {sha} ({size} bytes). Nothing was installed."
            )
        with path.open("rb") as f:
            os.fsync(f.fileno())

