"""A real Home Assistant, installed from the package index into a Debian trixie root and run
under ``systemd-nspawn``, for the end-to-end Assist test (tests/test_assist_ha_e2e.py).

>>> root = ha_root()                       # cached; built on first use (needs the network)
>>> with HomeAssistant(root, config_dir, log) as ha:
...     ha.url                               # http://127.0.0.1:<port>

Home Assistant 2026.x needs Python 3.13, which Debian trixie ships and this host (bookworm)
does not; hence the root. It is made once by ``debootstrap`` (``PACKAGES``: Python, ffmpeg,
which HA's ``ffmpeg`` integration and the TTS format conversion use), then, with the
host's network, a virtual environment at ``/opt/ha`` gets ``homeassistant==HA_VERSION`` and
the requirements of every integration the test loads (``INTEGRATIONS`` and what they depend
on, read from the installed manifests, under HA's own ``package_constraints.txt``). Home
Assistant would otherwise pip-install those on first use; the test runs it with
``--skip-pip``, so a run never touches the network. The root is kept under
``~/.cache/edge-recorder/ha-root-<hash>``, the hash naming ``RECIPE``, the packages and the
version; an interrupted build never looks finished.

The container is not booted (no systemd inside): ``systemd-nspawn --register=no
--keep-unit`` runs ``hass`` as its only process, sharing the host's network namespace so
Home Assistant reaches the device's API port on 127.0.0.1 and the test reaches HA's HTTP
port. ``--volatile=overlay`` leaves the cached tree untouched; the configuration directory
is bound in read-write from the test's temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from tests.nspawn_root import _prune, apt_mirror, cache_dir, host_codename, terminate

CODENAME = "trixie"
HA_VERSION = "2026.2.3"
PACKAGES = ("python3", "python3-venv", "ffmpeg", "ca-certificates", "tzdata")
BUILD_PACKAGES = ("gcc", "g++", "libc6-dev", "python3-dev", "make")
"""Some of HA's requirements come only as sdists for Python 3.13 (e.g. lru-dict)."""
INTEGRATIONS = ("demo", "esphome", "assist_pipeline", "conversation", "stt", "tts", "api",
                "http", "websocket_api", "onboarding", "auth", "config", "frontend",
                "camera", "stream", "image_processing")
"""What the test loads; the last three: the demo's camera platform imports them."""
RECIPE = 1
"""Bump when the way the root is made changes, so a cached root is rebuilt."""

VENV = "/opt/ha"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"

# Run inside the root once, with the network: the requirements of the integrations the test
# loads and of what they depend on, from the installed manifests.
_REQUIREMENTS = """
import json, sys
from pathlib import Path
import homeassistant
comp = Path(homeassistant.__file__).parent / "components"
todo, seen, reqs = list(sys.argv[1:]), set(), []
while todo:
    name = todo.pop()
    if name in seen or not (comp / name / "manifest.json").exists():
        continue
    seen.add(name)
    m = json.loads((comp / name / "manifest.json").read_text())
    reqs += m.get("requirements", [])
    todo += m.get("dependencies", []) + m.get("after_dependencies", [])
print("\\n".join(sorted(set(reqs))))
"""


def ha_root() -> Path:
    """The cached trixie root with Home Assistant installed; built when absent."""
    key = hashlib.sha256(
        f"{RECIPE} {CODENAME} {HA_VERSION} {' '.join(sorted(PACKAGES + BUILD_PACKAGES))} "
        f"{' '.join(sorted(INTEGRATIONS))}".encode())
    root = cache_dir() / f"ha-root-{key.hexdigest()[:16]}"
    if (root / VENV.lstrip("/") / ".complete").exists():
        return root
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: `make apt` (scripts/apt-deps.sh) installs it")
    work = root.with_name(f"{root.name}.building-{os.getpid()}")
    # debootstrap's result is kept when a later step fails, named by what it holds
    made = hashlib.sha256(f"{CODENAME} {' '.join(sorted(PACKAGES))}".encode()).hexdigest()
    base = root.with_name(f"ha-root-{made[:16]}.debootstrapped")
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    if base.exists():
        base.rename(work)
    else:
        try:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                  CODENAME, str(work), apt_mirror(host_codename())], "debootstrap")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    # The host's CA bundle and pip settings: a machine behind a TLS-inspecting proxy
    # reaches the package index only with its own CA.
    env = [f"--setenv={k}={v}" for k, v in os.environ.items()
           if k.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL",
                            "PIP_DEFAULT_TIMEOUT")]
    ca = [f"--bind-ro={HOST_CA}:/etc/ssl/certs/ca-certificates.crt"] \
        if Path(HOST_CA).exists() else []
    inside = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
              "--resolv-conf=copy-host", f"--directory={work}", *env, *ca, "--"]
    try:
        pip = [f"{VENV}/bin/pip", "install", "-q", "--disable-pip-version-check"]
        _run([*inside, "apt-get", "install", "-y", "-q", "--no-install-recommends",
              *BUILD_PACKAGES], "apt-get install (compilers for sdists)")
        _run([*inside, "python3", "-m", "venv", VENV], "venv")
        _run([*inside, *pip, f"homeassistant=={HA_VERSION}"], "pip install homeassistant")
        reqs = _run([*inside, f"{VENV}/bin/python", "-c", _REQUIREMENTS, *INTEGRATIONS],
                    "reading manifests")
        (work / "root/ha-requirements.txt").write_text(reqs)  # /tmp is a tmpfs inside
        constraints = (f"{VENV}/lib/python3.13/site-packages/homeassistant/"
                       "package_constraints.txt")
        _run([*inside, *pip, "-r", "/root/ha-requirements.txt", "-c", constraints],
             "pip install the integrations' requirements")
    except BaseException:
        if (work / "usr/bin/python3").exists():
            shutil.rmtree(work / VENV.lstrip("/"), ignore_errors=True)
            work.rename(base)
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise
    (work / VENV.lstrip("/") / ".complete").touch()
    work.rename(root)
    _prune("ha-root-", keep=root)
    return root


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    return proc.stdout


class HomeAssistant:
    """``hass`` in ``root``, with ``config`` (a host directory) as its configuration."""

    def __init__(self, root: Path, config: Path, log: Path, port: int) -> None:
        self.root = root
        self.config = config
        self.log = log
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HomeAssistant:
        command = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
                   "--volatile=overlay", "--resolv-conf=off", "--timezone=off",
                   f"--machine=edge-ha-{os.getpid()}", f"--directory={self.root}",
                   f"--bind={self.config}:/config", "--",
                   f"{VENV}/bin/hass", "--config", "/config", "--skip-pip"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM reaches hass through nspawn; kill only the nspawn process started here."""
        terminate(self.proc, timeout)
