"""Fuzzing the command line: ``edge.cli.main(argv)`` in-process with generated arguments.

Each case must end with exit code 0, 1 or 2, print no traceback, raise nothing but
SystemExit, and leave the sandbox untouched unless the command is one that writes
(and then only where that command writes).

Everything runs in a sandbox: $HOME, $STATE_DIRECTORY and the working directory are
temporary, path arguments come from a vocabulary of sandbox files or relative names,
and ``models fetch`` always gets ``--from`` a local file and ``--dir`` in the sandbox
(it never goes to the network). ``edge dashboard`` and ``edge simulate-fleet`` serve
until stopped and connect to the broker they are given, so their generated arguments
always end in ``--help``; an audit hook fails any case that looks up or connects to
anything but loopback. ``run --realtime`` is not generated: it only paces the
same path to real time, and would make each case take seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from edge import cli
from edge.privacy.identity import device_id
from tests.fixtures.audio import write_wav
from tests.fixtures.fuzz import no_hang
from tests.fuzz_strategies import NASTY, TEXT


@dataclass
class Sandbox:
    root: Path
    cwd: Path
    state: Path
    home: Path

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file and folder with its size and mtime, less third-party caches in $HOME
        (matplotlib's font list, onnxruntime's ~/.cache/Microsoft install id)."""
        out = {}
        caches = (self.home / ".cache", self.home / ".config")
        for p in sorted(self.root.rglob("*")):
            if any(p == c or c in p.parents for c in caches):
                continue
            st_ = p.lstat()
            is_dir = p.is_dir() and not p.is_symlink()  # a folder counts by its entries
            out[str(p.relative_to(self.root))] = (0, 0) if is_dir else (st_.st_size,
                                                                         st_.st_mtime_ns)
        return out


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-action ("config check", "models fetch") with its parser."""
    root = cli.build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, argparse.ArgumentParser] = {}
    for name, p in sub.choices.items():
        out[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for action, pp in a.choices.items():
                    out[f"{name} {action}"] = pp
    return out


SERVERS = ("dashboard", "simulate-fleet")
"""Commands that serve until stopped or connect to a broker named on the command line;
their arguments are parsed (see argvs) but they never run."""


class NetworkRefused(AssertionError):
    """A fuzzed command tried to reach beyond this machine's loopback."""


_guard = {"on": False}


def _loopback(host: object) -> bool:
    if host in (None, "", b"", "localhost", "::1"):
        return True
    return isinstance(host, str) and host.startswith("127.")


def _network_guard(event: str, args: tuple[object, ...]) -> None:
    # generated arguments may name any host: nothing may leave the machine
    if not _guard["on"]:
        return
    if event == "socket.getaddrinfo" and not _loopback(args[0]):
        raise NetworkRefused(f"a command looked up {args[0]!r}")
    if event == "socket.connect" and isinstance(args[1], tuple) and not _loopback(args[1][0]):
        raise NetworkRefused(f"a command connected to {args[1]!r}")


sys.addaudithook(_network_guard)
PARSERS = _parsers()
# Commands that must not change anything on disk, with the flags that make them write.
READ_ONLY = {"audit": (), "config": (), "config example": (), "config check": (),
             "devices": (), "stats": (), "models": (), "models list": (), "log": ("--export",),
             "purge": ("--yes",), "replay": ("--clips",), "identity": ("rotate",),
             "identity show": ()}
SAFE_PATHS = ["good.wav", "garbage.wav", "cfg.toml", "bad.toml", "dir", "missing.wav",
              "out", "out.csv", "out.json", "key", "sealed.clip", "/dev/null", "nul\x00.wav",
              "dir/", "report", "good.flac"]


def _safe_text(t: str) -> bool:
    # nothing absolute, nothing that climbs out of the sandbox, nothing that reads as ~
    return not t.startswith(("/", "~")) and ".." not in t and "\x00" not in t


TOKENS = st.one_of(
    st.sampled_from(SAFE_PATHS),
    NASTY.filter(_safe_text),
    TEXT.filter(_safe_text),
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True).map(repr),
)


def _values(a: argparse.Action) -> st.SearchStrategy[str]:
    """Mostly values of the argument's own type (so most cases get past argparse and into
    the command), sometimes anything."""
    if a.choices:
        typed: st.SearchStrategy[str] = st.sampled_from([str(c) for c in a.choices])
    elif a.type is int:
        typed = st.sampled_from([-1, 0, 1, 2, 3, 10**9]).map(str) | st.integers(-5, 50).map(str)
    elif a.type is float:
        typed = st.sampled_from(["0", "-1", "0.5", "1", "1e9", "nan", "inf", "1e-9"])
    elif a.type is Path:
        typed = st.sampled_from(SAFE_PATHS)
    else:
        typed = TOKENS
    return st.one_of(typed, typed, typed, TOKENS)


def _options(parser: argparse.ArgumentParser) -> st.SearchStrategy[list[str]]:
    """One option as a person would give it: a flag, or a flag with a value."""
    units: list[st.SearchStrategy[list[str]]] = []
    for a in parser._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction) \
                or "--realtime" in a.option_strings:
            continue
        if a.nargs == 0:
            units.append(st.sampled_from(a.option_strings).map(lambda f: [f]))
        else:
            units.append(st.tuples(st.sampled_from(a.option_strings), _values(a)).map(list))
    return st.one_of(units) if units else st.just([])


def _positionals(parser: argparse.ArgumentParser) -> st.SearchStrategy[list[str]]:
    parts = []
    for a in parser._actions:
        if a.option_strings or isinstance(a, argparse._SubParsersAction):
            continue
        low, high = {"?": (0, 1), "*": (0, 2), "+": (1, 2)}.get(str(a.nargs), (1, 1))
        parts.append(st.lists(_values(a), min_size=low, max_size=high))
    return st.tuples(*parts).map(lambda ps: [t for p in ps for t in p]) if parts \
        else st.just([])


SHAPES = {name: (_positionals(p), _options(p)) for name, p in PARSERS.items()}


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """Mostly well-formed command lines with hostile values; sometimes malformed ones."""
    command = draw(st.sampled_from(sorted(PARSERS)) | TEXT.filter(_safe_text).filter(
        lambda t: draw(st.integers(0, 9)) == 0))
    words = command.split(" ") if command in PARSERS else [command]
    positionals, options = SHAPES.get(command, SHAPES["replay"])
    args = [*draw(positionals), *(t for u in draw(st.lists(options, max_size=4)) for t in u)]
    if draw(st.integers(0, 6)) == 0:  # a stray token somewhere
        args.insert(draw(st.integers(0, len(args))), draw(TOKENS))
    argv = [*draw(st.lists(st.sampled_from(["-v", "--verbose"]), max_size=1)), *words, *args]
    if command == "models fetch":  # never the network, never outside the sandbox
        argv += ["--from", "garbage.whl", "--dir", "models-out"]
    if command in SERVERS:  # parse the arguments, but do not serve
        argv.append("--help")
    return argv


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    root = tmp_path_factory.mktemp("cli-fuzz")
    box = Sandbox(root, root / "cwd", root / "state", root / "home")
    for d in (box.cwd, box.state, box.home, box.cwd / "dir"):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(8000) * 300).astype(np.int16)
    write_wav(box.cwd / "good.wav", noise)
    import soundfile as sf

    sf.write(str(box.cwd / "good.flac"), noise, 16000)
    (box.cwd / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (box.cwd / "garbage.whl").write_bytes(b"PK\x03\x04 not a wheel")
    (box.cwd / "sealed.clip").write_bytes(os.urandom(200))
    (box.cwd / "key").write_text("not a key\n")
    (box.cwd / "cfg.toml").write_text(f'state_dir = "{box.state}"\n[upload]\nmode = "off"\n')
    (box.cwd / "bad.toml").write_text("[record]\nsilence_s = -1\n")
    device_id(box.state)  # the id exists, so `identity show` only reads it
    return box


@contextlib.contextmanager
def inside(box: Sandbox) -> Iterator[None]:
    saved_env = {k: os.environ.get(k) for k in ("HOME", "STATE_DIRECTORY", "EDGE_MODELS_DIR")}
    saved_cwd = os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    saved_level = root.level
    os.environ["HOME"] = str(box.home)
    os.environ["STATE_DIRECTORY"] = str(box.state)
    os.environ.pop("EDGE_MODELS_DIR", None)
    os.chdir(box.cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for s, h in saved_signals.items():
            signal.signal(s, h)
        root.setLevel(saved_level)


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def run_cli(box: Sandbox, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    _guard["on"] = True
    try:
        with inside(box), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                no_hang(120.0, f"edge {argv}"):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        _guard["on"] = False
        logging.getLogger().removeHandler(tracebacks)
    assert not tracebacks.records, \
        f"edge {argv} logged a traceback: {tracebacks.records[0].getMessage()}"
    return code, out.getvalue(), err.getvalue()


def check(box: Sandbox, argv: list[str]) -> None:
    words = [w for w in argv if w not in ("-v", "--verbose")]
    command = " ".join(words[:2]) if " ".join(words[:2]) in PARSERS else words[0] if words \
        else ""
    before = box.snapshot()
    code, out, err = run_cli(box, argv)
    how = "argparse usage error" if "usage:" in err and code == 2 else f"exit {code}"
    event(f"{command if command in PARSERS else '(unknown command)'}: {how}")
    assert code in (0, 1, 2), f"edge {argv} exited {code}: {err[-500:]}"
    assert "Traceback" not in err, f"edge {argv} printed a traceback:\n{err[-2000:]}"
    if code != 0:
        lines = [ln for ln in err.splitlines() if ln.startswith("edge: error:")]
        assert lines or "usage:" in err or out.strip(), \
            f"edge {argv} failed without saying why: {err!r}"
    writers = READ_ONLY.get(command)
    if writers is not None and not any(w in argv for w in writers):
        assert box.snapshot() == before, f"read-only `edge {' '.join(argv)}` changed files"


@given(argv=argvs())
@example(argv=["replay", "good.wav", "--json"])
@example(argv=["replay", "garbage.wav", "good.flac", "--threshold", "nan"])
@example(argv=["config", "check", "bad.toml"])
@example(argv=["log", "--limit", "0"])
@example(argv=["stats", "--since", "2030-13-45"])
@example(argv=["run", "--input", "good.wav", "--config", "cfg.toml"])
@example(argv=["run", "--input", "no such device"])
@example(argv=["measure", "garbage.wav", "--jobs", "1", "--quiet"])
@example(argv=["decrypt", "sealed.clip", "--key", "key"])
@example(argv=["decrypt", "good.wav", "--key", "good.wav"])
@example(argv=["run", "--config", "nul\x00.wav"])
@example(argv=["decrypt", "good.wav", "--key", "nul\x00.wav"])
@example(argv=["decrypt", "sealed.clip", "--key", "key", "--out", "good.wav"])
@example(argv=["replay", "good.wav", "--clips", "good.wav"])
@example(argv=["measure", "good.wav", "--out", "good.wav", "--jobs", "1"])
@example(argv=["label", "last", "maybe"])
@example(argv=["stats", "--since", "999999999d"])
@example(argv=["label", "\u00b2", "false"])
@example(argv=["replay", "good.wav", "--threshold", "0"])
@example(argv=[])
def test_generated_command_lines_end_cleanly(sandbox, argv):
    check(sandbox, argv)
