"""install.sh into an isolated root: install, upgrade (the config untouched), uninstall, purge.

``--root DIR`` puts every path under DIR and talks to no running systemd: the user and
groups are written to DIR/etc by systemd-sysusers, the unit is enabled offline by
``systemctl --root``, and apt is not run. Not running as root, it runs under fakeroot.

The default test installs the package without its dependencies (``--pip-args --no-deps``)
to stay fast; ``test_full_install_runs_the_recorder`` (slow: ``make test-install``) installs
everything from the package index and runs the installed recorder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edge.wake.models import Manifest, ModelStore
from tests.fixtures.wake import write_wake_wav

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.sh"


def run_installer(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.geteuid() == 0 else ["fakeroot"]
    proc = subprocess.run([*prefix, str(INSTALL), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() or p.is_symlink()}


def account(root: Path, db: str, name: str) -> list[str] | None:
    for line in (root / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def members(root: Path, group: str) -> set[str]:
    fields = account(root, "group", group)
    assert fields is not None, f"no group {group}"
    return set(filter(None, fields[3].split(",")))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def install_fast(root: Path, store: ModelStore, *args: str) -> subprocess.CompletedProcess[str]:
    return run_installer(root, "--pip-args", "--no-deps", "--models-from", str(store.directory),
                         *args)


def test_install_upgrade_uninstall_purge(root, store, tmp_path):
    out = install_fast(root, store, "--profile", "respeaker-2mic-v1",
                       "--mute-pin", "GPIO22").stdout

    # -- installed --
    venv = root / "opt/edge-recorder/venv"
    assert (venv / "bin/edge").exists()
    where = subprocess.run([str(venv / "bin/python"), "-I", "-c",
                            "import edge; print(edge.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv))  # the package was installed, not linked to the checkout
    unit = root / "etc/systemd/system/edge-recorder.service"
    assert unit.read_text() == (REPO / "systemd/edge-recorder.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-recorder.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/edge-recorder.service"
    wrapper = (root / "usr/local/bin/edge").read_text()
    assert "exec /opt/edge-recorder/venv/bin/edge" in wrapper
    assert os.stat(root / "usr/local/bin/edge").st_mode & stat.S_IXUSR

    user = account(root, "passwd", "edge-recorder")
    assert user is not None and user[5] == "/var/lib/edge-recorder"
    assert user[6] == "/usr/sbin/nologin"
    for group in ("audio", "gpio", "spi"):
        assert "edge-recorder" in members(root, group)
    gid = int(account(root, "group", "edge-recorder")[2])  # type: ignore[index]

    config = root / "etc/edge-recorder/config.toml"
    st = config.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:  # under fakeroot the ownership is only pretended
        assert st.st_gid == gid
    text = config.read_text()
    assert text.startswith("# Written by install.sh")
    assert 'profile = "respeaker-2mic-v1"' in text and 'mute_pin = "GPIO22"' in text
    assert (root / "etc/edge-recorder/config.example.toml").read_text() == \
        (REPO / "config.example.toml").read_text()
    models = ModelStore(root / "var/lib/edge-recorder/models", Manifest.load())
    assert all(models.status(m.name).state == "ok" for m in models.manifest.models)
    assert stat.S_IMODE((root / "var/lib/edge-recorder").stat().st_mode) == 0o700
    assert "wrote" in out and "models verified" in out

    # -- the installed unit verifies against the installed program --
    copy = tmp_path / "edge-recorder.service"
    copy.write_text(unit.read_text().replace("/opt/edge-recorder", str(root / "opt/edge-recorder")))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr

    # -- an upgrade refuses a config the new version would reject, and changes nothing --
    config.write_text(text.replace('log_level = "info"', 'log_level = "loud"'))
    before = {f: (root / f).lstat().st_mtime_ns for f in files_under(root)}
    proc = run_installer(root, check=False)
    assert proc.returncode == 1
    assert "config key log_level = 'loud' is not allowed" in proc.stderr
    assert f"fix {config} and run it again" in proc.stderr
    assert {f: (root / f).lstat().st_mtime_ns for f in files_under(root)} == before

    # -- the operator edits the config; the device collects data --
    edited = text.replace("log_level = \"info\"", "log_level = \"debug\"") + "# mine\n"
    config.write_text(edited)
    clip = root / "var/lib/edge-recorder/clips/a.wav"
    clip.parent.mkdir()
    clip.write_bytes(b"RIFF")
    (root / "var/lib/edge-recorder/activations.sqlite3").write_bytes(b"db")

    # -- upgrade: same command again --
    out = install_fast(root, store).stdout
    assert config.read_text() == edited
    assert "kept" in out and "models already installed" in out
    assert clip.read_bytes() == b"RIFF"
    assert wants.is_symlink()

    # -- uninstall: the program goes; the data and the edited config stay --
    out = run_installer(root, "--uninstall").stdout
    left = files_under(root)
    for gone in ("opt/edge-recorder", "usr/local/bin/edge", "etc/sysusers.d/edge-recorder.conf",
                 "etc/systemd/system/edge-recorder.service", "var/lib/edge-recorder/models",
                 "etc/edge-recorder/config.example.toml",
                 "etc/systemd/system/multi-user.target.wants/edge-recorder.service"):
        assert not any(f == gone or f.startswith(gone + "/") for f in left), gone
    assert config.read_text() == edited
    assert clip.exists() and (root / "var/lib/edge-recorder/activations.sqlite3").exists()
    assert "kept your edited config" in out and "--purge" in out

    # -- purge: nothing of it is left, not even the user --
    run_installer(root, "--purge")
    left = files_under(root)
    accounts = {f"etc/{db}{suffix}" for db in ("passwd", "group", "shadow", "gshadow")
                for suffix in ("", "-")} | {"etc/.pwd.lock"}  # the databases and their backups
    assert left <= accounts, left
    assert account(root, "passwd", "edge-recorder") is None
    assert account(root, "group", "edge-recorder") is None


def test_uninstall_removes_an_unedited_config(root, store):
    install_fast(root, store)
    run_installer(root, "--uninstall")
    assert not (root / "etc/edge-recorder").exists()
    assert account(root, "passwd", "edge-recorder") is not None  # the user goes with --purge


def test_bad_models_stop_the_install_with_a_clear_error(root, tmp_path, store):
    bad = tmp_path / "models"
    shutil.copytree(store.directory, bad, ignore=shutil.ignore_patterns(".staging*"))
    target = bad / store.manifest.entry("alexa").file
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    proc = run_installer(root, "--pip-args", "--no-deps", "--models-from", str(bad), check=False)
    assert proc.returncode != 0
    assert "install.sh: error: refusing" in proc.stderr and "Nothing was installed" in proc.stderr
    assert not (root / "etc/systemd/system/edge-recorder.service").exists()


def test_a_config_that_would_not_run_stops_the_install_before_anything_changes(root, store):
    proc = run_installer(root, "--profile", "respeaker-2mic-v1", check=False)  # no --mute-pin
    assert proc.returncode == 1
    assert "install.sh: error: config key hardware.mute_pin is not set" in proc.stderr
    assert files_under(root) == set()


def test_unknown_option_is_refused(root):
    proc = run_installer(root, "--frobnicate", check=False)
    assert proc.returncode == 1
    assert "unknown option '--frobnicate'" in proc.stderr


def verify_with_drop_in(unit: Path, drop_in: Path, root: Path, tmp_path: Path) -> str:
    """`systemd-analyze verify` of the installed unit with its drop-in appended (a second
    [Service] section reads exactly as a drop-in does); its stderr."""
    copy = tmp_path / "edge-recorder.service"
    copy.write_text(unit.read_text().replace("/opt/edge-recorder", str(root / "opt/edge-recorder"))
                    + "\n" + drop_in.read_text())
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.strip()


def test_with_nothing_leaving_the_device_the_service_may_reach_loopback_only(root, store,
                                                                            tmp_path):
    out = install_fast(root, store).stdout  # the defaults: upload.mode = "off", no MQTT
    unit = root / "etc/systemd/system/edge-recorder.service"
    drop_in = root / "etc/systemd/system/edge-recorder.service.d/no-network.conf"
    assert drop_in.read_text() == (REPO / "systemd/no-network.conf").read_text()
    lines = drop_in.read_text().splitlines()
    assert "IPAddressDeny=any" in lines and "IPAddressAllow=localhost" in lines
    assert "Environment=EDGE_IP_DENIED=1" in lines
    assert "loopback only" in out
    assert verify_with_drop_in(unit, drop_in, root, tmp_path) == ""

    # the owner turns MQTT on to a broker on the LAN: running install.sh again lifts the deny
    config = root / "etc/edge-recorder/config.toml"
    head, mqtt = config.read_text().split("\n[mqtt]\n", 1)
    lan = head + "\n[mqtt]\n" + mqtt.replace("\nenabled = false\n", "\nenabled = true\n", 1) \
        .replace('\nhost = ""\n', '\nhost = "broker.lan"\n', 1)
    config.write_text(lan)
    out = install_fast(root, store).stdout
    assert not drop_in.exists() and not drop_in.parent.exists()
    assert "removed" in out

    # a broker on this machine needs no network: the deny comes back
    config.write_text(lan.replace('host = "broker.lan"', 'host = "127.0.0.1"', 1))
    install_fast(root, store)
    assert drop_in.exists()


@pytest.mark.slow
def test_full_install_runs_the_recorder(root, store, tmp_path):
    """Everything from the package index, then the installed `edge` replays a wake word."""
    run_installer(root, "--models-from", str(store.directory))
    edge = root / "opt/edge-recorder/venv/bin/edge"
    env = {**os.environ, "EDGE_MODELS_DIR": str(root / "var/lib/edge-recorder/models")}
    check = subprocess.run([str(edge), "config", "check",
                            str(root / "etc/edge-recorder/config.toml")],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    wav = write_wake_wav(tmp_path / "wake.wav", 4.0)
    replay = subprocess.run([str(edge), "replay", str(wav), "--json"], capture_output=True,
                            text=True, env=env)
    assert replay.returncode == 0, replay.stderr
    assert '"event": "detection"' in replay.stdout and "hey_jarvis" in replay.stdout
