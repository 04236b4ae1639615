"""``edge assist key`` and ``edge config check`` on the ``[assist]`` section."""

from __future__ import annotations

import pytest

from edge.assist.keys import decode_key
from edge.cli import main as edge


def config(tmp_path, assist: str = "") -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "edge.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n{assist}')
    return str(path)


def test_assist_key_prints_the_key_and_makes_it_private_once(tmp_path, capsys):
    cfg = config(tmp_path)
    assert edge(["assist", "key", "--config", cfg]) == 0
    key = capsys.readouterr().out.strip()
    assert len(decode_key(key, "printed")) == 32
    stored = tmp_path / "state" / "assist.key"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert edge(["assist", "key", "--config", cfg]) == 0
    assert capsys.readouterr().out.strip() == key  # the same key, not a new one


def test_a_key_others_can_read_is_refused_in_one_line(tmp_path, capsys):
    cfg = config(tmp_path)
    assert edge(["assist", "key", "--config", cfg]) == 0
    (tmp_path / "state" / "assist.key").chmod(0o644)
    capsys.readouterr()
    assert edge(["assist", "key", "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "readable by others" in err and "chmod 600" in err


@pytest.mark.parametrize("assist,message", [
    ('[assist]\nmode = "esphome"\nname = "Kitchen Pi"\n', "assist.name = 'Kitchen Pi' is not "
     "allowed; expected 1 to 31 lower-case letters"),
    ('[assist]\nmode = "alexa"\n', "assist.mode = 'alexa' is not allowed; expected one of "
     "'off', 'esphome', 'wyoming', 'stt'"),
    ('[assist]\nmode = "stt"\n', "assist.mode = 'stt' needs assist.stt.url"),
    ('[assist.stt]\nurl = "http://192.0.2.7/"\n', "assist.stt.url = 'http://192.0.2.7/' is "
     "plain http to another machine"),
    ('[assist]\nport = 0\n', "assist.port = 0 is not allowed; expected a whole number from 1 "
     "to 65535"),
])
def test_config_check_refuses_a_bad_assist_section(tmp_path, capsys, assist, message):
    assert edge(["config", "check", config(tmp_path, assist)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_the_default_and_an_esphome_section_pass_config_check(tmp_path, capsys):
    assert edge(["config", "check", config(tmp_path)]) == 0
    ok = '[assist]\nmode = "esphome"\nname = "kitchen-pi"\nport = 6054\n'
    assert edge(["config", "check", config(tmp_path, ok)]) == 0


def test_esphome_without_the_assist_extra_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    import sys

    from edge.assist.plugin import AssistPlugin
    from edge.config import AssistConfig, Config, replace
    from edge.errors import ConfigError
    from edge.pipeline.runner import Commands

    for module in ("aioesphomeapi", "edge.assist.esphome", "edge.assist.session",
                   "edge.assist.framing", "edge.assist.discovery"):
        monkeypatch.setitem(sys.modules, module, None)  # None: the import fails, as uninstalled
    cfg = replace(Config(), state_dir=str(tmp_path / "state"),
                  assist=AssistConfig(mode="esphome"))
    with pytest.raises(ConfigError, match=r"assist.mode = 'esphome' needs the assist extra .*"
                                          r"pip install 'edge-recorder\[assist\]'"):
        AssistPlugin.build(cfg, Commands(), clock=None, mute=None,  # type: ignore[arg-type]
                           wake_words=("hey_jarvis",), device_id="0123456789abcdef")


def test_a_satellite_on_the_network_needs_the_network_and_one_on_loopback_does_not():
    from edge.config import AssistConfig, Config, replace
    from edge.errors import ConfigError
    from edge.service.network import check_network_allowed, remote_hosts

    lan = replace(Config(), assist=AssistConfig(mode="esphome"))
    assert remote_hosts(lan) == [("assist.host", "0.0.0.0")]  # install.sh keeps the network
    with pytest.raises(ConfigError, match="assist.host = '0.0.0.0' listens for other machines"):
        check_network_allowed(lan, {"EDGE_IP_DENIED": "1"})
    local = replace(Config(), assist=AssistConfig(mode="esphome", host="127.0.0.1"))
    assert remote_hosts(local) == [] and remote_hosts(Config()) == []
