"""A Debian that boots its own systemd in a container, for tests of the installed service.

>>> root = debian_root()                     # cached; built with debootstrap when absent
>>> wheels = wheelhouse(REPO)                # edge-recorder's dependencies, as wheels
>>> with Container(root, {wheels: "/var/cache/edge-wheels"}, log) as box:
...     box.run("systemctl", "is-active", "edge-recorder")

The root is the host's Debian release (so the wheels built here fit its Python), made by
``debootstrap`` from the mirror apt uses here, with the packages ``install.sh`` expects to
find (``PACKAGES``). It takes a minute or two, so it is kept under
``~/.cache/edge-recorder/nspawn-root-<hash>``, the hash naming the release, the package list
and ``RECIPE``; a fresh machine builds it on first use. The container boots it with
``systemd-nspawn --boot --volatile=overlay``: everything written inside goes to a tmpfs
over the cached tree, which therefore stays as debootstrap left it, and each boot starts
from it afresh.

There is no systemd on the host to register the container with (``--register=no
--keep-unit``), hence no ``machinectl``: commands run inside through ``nsenter`` into every
namespace of the container's init, and its files are reached from here through
``/proc/<init>/root``. ``--private-network`` gives it a network namespace of its own (only
loopback): nothing it starts can touch the host's interfaces, and ``install.sh`` installs
from the wheelhouse offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import TracebackType

from tests.waiting import wait_for

PACKAGES = (
    "systemd", "systemd-sysv", "dbus",             # the init that boots, and its bus
    "python3", "python3-venv",                     # install.sh's virtual environment
    "libportaudio2", "libasound2", "alsa-utils",   # capture through PortAudio and ALSA
    "libsndfile1", "ca-certificates",
)
RECIPE = 1
"""Bump when the way the root is made changes, so a cached root is rebuilt."""

INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-recorder"


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("/etc/os-release names no VERSION_CODENAME: this host is not Debian")


def apt_mirror(codename: str) -> str:
    """The URI apt on this host uses for ``codename`` (deb822 or one-line sources)."""
    sources = Path("/etc/apt")
    for f in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in f.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if ("deb" in fields.get("Types", "").split()
                    and codename in fields.get("Suites", "").split()):
                return fields["URIs"].split()[0]
    for f in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if f.exists():
            for line in f.read_text().splitlines():
                m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == codename:
                    return m.group(1)
    return "http://deb.debian.org/debian"


def debian_root() -> Path:
    """The cached Debian root for the container; made with debootstrap when absent."""
    codename = host_codename()
    key = hashlib.sha256(f"{RECIPE} {codename} {' '.join(sorted(PACKAGES))}".encode())
    root = cache_dir() / f"nspawn-root-{key.hexdigest()[:16]}"
    if (root / "usr/lib/systemd/systemd").exists():
        return root
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: `make apt` (scripts/apt-deps.sh) installs it")
    work = root.with_name(f"{root.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", codename,
         str(work), apt_mirror(codename)], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    work.rename(root)  # whole or not at all: an interrupted build never looks finished
    _prune("nspawn-root-", keep=root)
    return root


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM to ``proc`` (a ``systemd-nspawn`` started here: it passes the signal on to
    what it runs); killed, it alone, if it has not ended within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _prune(prefix: str, keep: Path) -> None:
    """Remove the cache's older entries of one kind, so it holds one root and one wheelhouse."""
    for old in cache_dir().glob(f"{prefix}*"):
        if old != keep and "building" not in old.name:
            shutil.rmtree(old, ignore_errors=True)


def wheelhouse(repo: Path, extras: str = "") -> Path:
    """Wheels of everything ``pip install repo[extras]`` needs, and of its build backend,
    built here (PyAudio is compiled against this host's PortAudio headers) so the container
    installs with ``--no-index``. Cached by pyproject.toml; the project's own wheel is left
    out, as install.sh builds it from the checkout."""
    pyproject = (repo / "pyproject.toml").read_bytes()
    backend = tomllib.loads(pyproject.decode())["build-system"]["requires"]
    key = hashlib.sha256(pyproject + f"{extras} {sys.version_info[:2]}".encode()).hexdigest()
    out = cache_dir() / f"wheels-{key[:16]}"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--wheel-dir", str(out), f"{repo}{extras}", *backend],
        capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for own in out.glob("edge_recorder-*.whl"):
        own.unlink()
    (out / ".complete").touch()
    _prune("wheels-", keep=out)
    return out


class Container:
    """``systemd-nspawn --boot`` of ``root`` as a child process; commands run inside it.

    ``binds`` maps host paths to where they appear inside (read-only). The console goes to
    ``log``. ``stop`` (or leaving the ``with``) powers it off, and kills only the nspawn
    process it started if that does not end.
    """

    def __init__(self, root: Path, binds: dict[Path, str], log: Path,
                 name: str = f"edge-boot-{os.getpid()}") -> None:
        self.root = root
        self.binds = binds
        self.log = log
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, boot_timeout: float = 180) -> None:
        command = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
                   "--volatile=overlay", "--private-network", "--console=read-only",
                   f"--machine={self.name}", f"--directory={self.root}",
                   *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items())]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            self.leader = wait_for(self._init, 60, "the container's systemd to start",
                                   poll_s=0.1)
            state = wait_for(self._booted, boot_timeout, "the container to finish booting",
                             poll_s=0.5)
            if state != "running":
                failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
                raise RuntimeError(f"the container booted {state}: failed units:\n{failed}")
        except BaseException:
            self.stop()
            raise

    def _init(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def _booted(self) -> str:
        # "offline" until its manager answers on the bus; then "initializing", "starting"
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state if state in ("running", "degraded", "maintenance", "stopping") else ""

    def command(self, *argv: str) -> list[str]:
        """``argv`` as it runs inside: every namespace of the container, a clean environment."""
        return ["nsenter", f"--target={self.leader}", "--all", "--",
                "/usr/bin/env", "-i", f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", "SYSTEMD_PAGER=",
                "HOME=/root", *argv]

    def run(self, *argv: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.command(*argv), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited with {proc.returncode} inside the "
                                 f"container:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def path(self, inside: str) -> Path:
        """A path inside the container, as this process reaches it."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def stop(self, timeout: float = 90) -> None:
        """Power the container off (nspawn turns SIGTERM into an orderly shutdown)."""
        terminate(self.proc, timeout)
