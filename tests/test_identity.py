"""The pseudonymous device id: random, private, stable, rotatable."""

from __future__ import annotations

import socket

from edge.cli import main as edge
from edge.privacy import identity


def test_made_once_private_and_stable(tmp_path):
    first = identity.device_id(tmp_path)
    assert len(first) == 16 and int(first, 16) >= 0
    assert (tmp_path / "device_id").stat().st_mode & 0o077 == 0
    assert identity.device_id(tmp_path) == first
    assert socket.gethostname() not in first


def test_rotate_makes_a_new_unrelated_id(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(f'state_dir = "{tmp_path}"\n')
    assert edge(["identity", "--config", str(tmp_path / "c.toml")]) == 0
    old = capsys.readouterr().out.strip()
    assert edge(["identity", "rotate", "--config", str(tmp_path / "c.toml")]) == 0
    assert f"{old} -> " in capsys.readouterr().out
    new = identity.device_id(tmp_path)
    assert new != old


def test_a_garbled_id_file_is_replaced(tmp_path, caplog):
    (tmp_path / "device_id").write_text("pi-hostname-01\n")
    new = identity.device_id(tmp_path)
    assert new != "pi-hostname-01" and len(new) == 16
    assert "not a device id" in caplog.text
