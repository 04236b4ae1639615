"""`edge --help` and every subcommand's help say what each command and option does, and the
README's command table names every subcommand."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from edge.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def parsers(parser: argparse.ArgumentParser, path: str = "edge"
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``parser``, with the command line that reaches it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def undocumented() -> list[str]:
    missing = []
    for path, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            name = "/".join(action.option_strings) or action.metavar or action.dest
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [f"{path} {sub} (the command)" for sub in action.choices
                            if not (helps.get(sub) or "").strip()]
            elif not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {name}")
    return missing


def test_every_command_and_option_has_help_text():
    assert undocumented() == []


def test_the_walk_reaches_every_subcommand_and_their_options():
    paths = {p for p, _ in parsers(build_parser())}
    assert {f"edge {c}" for c in COMMANDS} <= paths
    assert {"edge models fetch", "edge config check", "edge hardware check"} <= paths
    options = sum(len(p._actions) for _, p in parsers(build_parser()))
    assert options > 80  # not an empty walk


def test_the_readme_command_table_names_every_subcommand():
    text = README.read_text()
    table = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`edge ([a-z][a-z-]*)", table))
    assert set(COMMANDS) - named == set()


def options_of(command: str) -> set[str]:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


def test_broker_settings_from_the_command_line_name_options_that_exist():
    from edge.mqtt.topics import broker_from_url

    s = broker_from_url("mqtts://broker.lan", ca="ca.pem", username="u", password_file="pw")
    for command in ("dashboard", "simulate-fleet"):
        for name in ("host", "port", "tls", "ca", "username", "password_file"):
            assert s.setting(name) in options_of(command), name
    assert s.settings_named("host", "port") == "--broker"
    assert s.settings_named("username", "password_file") == (
        "--broker-username and --broker-password-file")


def test_a_broker_url_with_credentials_names_the_options_to_use_instead():
    import pytest

    from edge.errors import UsageError
    from edge.mqtt.topics import broker_from_url

    with pytest.raises(UsageError) as err:
        broker_from_url("mqtt://user:secret@broker.lan")
    named = set(re.findall(r"--[a-z][a-z-]*", str(err.value)))
    assert named == {"--broker", "--broker-username", "--broker-password-file"}
    assert named <= options_of("dashboard")


def test_an_unreachable_broker_from_the_command_line_names_the_option(caplog):
    import logging
    import socket

    from edge.mqtt.client import MqttConnection
    from edge.mqtt.topics import broker_from_url
    from tests.waiting import wait_for

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again: nothing listens there
    conn = MqttConnection(broker_from_url(f"mqtt://127.0.0.1:{port}"), "edge-help-test")
    with caplog.at_level(logging.WARNING, logger="edge.mqtt.client"):
        conn.start()
        try:
            wait_for(lambda: any("cannot reach" in r.getMessage() for r in caplog.records), 30,
                     "the unreachable-broker warning")
        finally:
            conn.stop()
    [msg] = [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]
    assert msg == (f"cannot reach MQTT broker 127.0.0.1:{port}; retrying in the background "
                   "(check --broker, and that the broker runs)")


def without(module: str, *argv: str) -> tuple[int, str]:
    """`edge ARGV` in a Python where ``module`` cannot be imported, as in `make run`'s venv."""
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{module!r}] = None; from edge.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    return out.returncode, out.stderr


def test_measure_without_its_extra_says_how_to_install_it_from_the_checkout(tmp_path):
    code, err = without("matplotlib", "measure", str(tmp_path))
    assert code == 2 and "Traceback" not in err
    assert err.strip() == ("edge: error: edge measure needs matplotlib (the measure extra); "
                           "in the checkout run: .venv/bin/pip install -e '.[measure]'")


def test_dashboard_without_its_extra_says_how_to_install_it_from_the_checkout():
    code, err = without("uvicorn", "dashboard", "--broker", "mqtt://127.0.0.1")
    assert code == 2 and "Traceback" not in err
    assert err.strip().endswith("in the checkout run: .venv/bin/pip install -e '.[dashboard]'")


def test_a_command_builds_only_its_own_parser_and_errors_still_list_every_command():
    import subprocess
    import sys

    from edge.cli import command_named

    assert command_named(["-v", "label", "--help"]) == "label"
    assert command_named(["--help"]) is None and command_named(["rn"]) is None
    assert command_named([]) is None
    # `edge label` does not import what `edge run` or `edge measure` need
    code = ("import sys; from edge.cli import main\n"
            "try: main(['-q', 'label', '--help'])\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('numpy', 'edge.commands.run', 'edge.commands.measure') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "usage: edge label" in out and out.strip().endswith("[]")
    typo = subprocess.run([sys.executable, "-m", "edge", "rn"], capture_output=True, text=True)
    assert typo.returncode == 2 and all(c in typo.stderr for c in COMMANDS)


def test_an_argument_holding_a_nul_byte_is_refused_in_one_line(capsys):
    from edge.cli import main

    assert main(["decrypt", "good.wav", "--key", "nul\x00.wav"]) == 2
    err = capsys.readouterr().err
    assert err == ("edge: error: the argument 'nul\\x00.wav' holds a NUL byte, which no name, "
                   "path or value can hold\n")
