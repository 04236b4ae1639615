"""The pseudonymous device id: random, private, stable, rotatable."""

from __future__ import annotations

import os
import socket

import pytest

from edge.cli import main as edge
from edge.privacy import identity

NOBODY = 65534


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


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a file another user's")
@pytest.mark.parametrize("action", ["rotate", "show"])
def test_an_id_written_as_root_belongs_to_the_state_dirs_owner(tmp_path, capsys, action):
    """``sudo edge identity rotate`` (or the first ``show``) must leave the id readable by the
    service, which runs as the state directory's owner: root's file would crash-loop it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    (tmp_path / "c.toml").write_text(f'state_dir = "{state}"\n')
    assert edge(["identity", action, "--config", str(tmp_path / "c.toml")]) == 0
    st = (state / "device_id").stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert st.st_mode & 0o777 == 0o600
    assert [p.name for p in state.iterdir()] == ["device_id"]  # no temp file left behind
