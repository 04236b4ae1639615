"""The systemd unit: `systemd-analyze verify`, the exposure score, and the settings that audio,
GPIO and the watchdog depend on.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from edge.commands.doctor import SYSTEM_CONFIG

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-recorder.service"
MAX_EXPOSURE = 3.0


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def exposure(unit: Path) -> float:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(unit)], capture_output=True, text=True, cwd=unit.parent)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, f"no exposure level in the output:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


def test_unit_verifies(tmp_path):
    # verify checks that ExecStart exists: point a copy at a stand-in under tmp_path
    fake_opt = tmp_path / "opt" / "edge-recorder"
    edge = fake_opt / "venv" / "bin" / "edge"
    edge.parent.mkdir(parents=True)
    edge.write_text("#!/bin/sh\n")
    edge.chmod(0o755)
    copy = tmp_path / "edge-recorder.service"
    copy.write_text(UNIT.read_text().replace("/opt/edge-recorder", str(fake_opt)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_exposure_score_is_at_most_3(tmp_path):
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE


def test_the_score_parser_sees_an_unhardened_unit(tmp_path):
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    assert exposure(bare) > 9.0


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


def test_readiness_watchdog_and_restarts(unit):
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["20s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StartLimitIntervalSec"] == ["0"]  # a mic unplugged for hours: keep trying


def test_the_sandbox_leaves_audio_gpio_and_spi_reachable(unit):
    assert "PrivateDevices" not in unit and "PrivateUsers" not in unit
    assert unit["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in unit["DeviceAllow"]}
    assert allowed == {"char-alsa", "char-gpiochip", "char-spi"}
    assert all(v.endswith(" rw") for v in unit["DeviceAllow"])
    assert unit["SupplementaryGroups"] == ["audio gpio spi"]
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0]  # journald and sd_notify


def test_hardening_and_directories(unit):
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("NoNewPrivileges", "yes"), ("MemoryDenyWriteExecute", "yes"),
                       ("StateDirectory", "edge-recorder"),
                       ("ConfigurationDirectory", "edge-recorder"),
                       ("RuntimeDirectory", "edge-recorder"), ("LimitCORE", "0")]:
        assert unit[key] == [value], key
    # lgpio needs a writable working directory: the runtime directory is the one
    assert unit["WorkingDirectory"] == ["/run/edge-recorder"]
    assert "LG_WD=/run/edge-recorder" in unit["Environment"]
    assert unit["User"] == ["edge-recorder"]


def test_exec_start_matches_the_installer_and_the_doctor(unit):
    install = (REPO / "install.sh").read_text()
    (exec_start,) = unit["ExecStart"]
    assert exec_start == f"/opt/edge-recorder/venv/bin/edge run --config {SYSTEM_CONFIG}"
    assert "VENV=$OPT/venv" in install and "OPT=$ROOT/opt/$NAME" in install
    assert "CONFIG=$ETC/config.toml" in install and "ETC=$ROOT/etc/$NAME" in install
