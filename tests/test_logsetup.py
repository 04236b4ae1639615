"""Logging: journald's native protocol on a real unix socket, structured fields, and no audio
ever in a log line, not even from a careless call or over a full replay with debug logging.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.service.logs import JournalHandler, configure, decode, encode, fields, journal_wanted
from tests.fixtures.audio import phrase
from tests.fixtures.wake import write_wake_wav
from tests.waiting import wait_for


class Journal:
    """A stand-in for journald: a datagram socket in tmp_path, read on its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.entries: list[dict[str, str]] = []
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 1)
            except TimeoutError:
                continue
            if fds:  # an entry too big for a datagram comes as a sealed memfd
                with os.fdopen(fds[0], "rb") as f:
                    data = os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0)
            self.raw.append(data)
            self.entries.append(decode(data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def wait(self, n: int) -> list[dict[str, str]]:
        wait_for(lambda: len(self.entries) >= n, 10.0, f"{n} journal entries")
        return self.entries


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.socket")
    yield j
    j.close()


@pytest.fixture
def journal_logger(journal: Journal) -> Iterator[logging.Logger]:
    """The root logger at DEBUG, with a JournalHandler writing to the test journal."""
    root = logging.getLogger()
    handler = JournalHandler(journal.path)
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield root
    root.removeHandler(handler)
    root.setLevel(old)
    handler.close()


def test_wire_format_round_trips_values_with_newlines_and_binary_safe_lengths():
    entry = {"MESSAGE": "line one\nline two", "PRIORITY": 6, "EDGE_EVENT": "clip"}
    data = encode(entry)
    assert data.startswith(b"MESSAGE\n" + (17).to_bytes(8, "little") + b"line one\nline two\n")
    assert decode(data) == {"MESSAGE": "line one\nline two", "PRIORITY": "6", "EDGE_EVENT": "clip"}


def test_records_reach_the_journal_with_priority_code_location_and_edge_fields(
        journal, journal_logger):
    log = logging.getLogger("edge.test")
    log.warning("outbox holds %d clips", 3, extra=fields(event="outbox_full", clips=3))
    (e,) = journal.wait(1)
    assert e["MESSAGE"] == "outbox holds 3 clips"
    assert e["PRIORITY"] == "4"
    assert e["SYSLOG_IDENTIFIER"] == "edge-recorder"
    assert e["LOGGER"] == "edge.test"
    assert e["CODE_FILE"] == __file__ and e["CODE_FUNC"].startswith("test_records_reach")
    assert int(e["CODE_LINE"]) > 0
    assert e["EDGE_EVENT"] == "outbox_full" and e["EDGE_CLIPS"] == "3"


def test_an_entry_too_big_for_a_datagram_goes_through_a_memfd(journal, journal_logger):
    big = "x" * 400_000  # a field (a message is cut at 4000 characters anyway)
    logging.getLogger("edge.test").info("big field", extra=fields(blob=big))
    (e,) = journal.wait(1)
    assert e["MESSAGE"] == "big field" and e["EDGE_BLOB"] == big


def test_a_careless_log_call_cannot_write_audio(journal, journal_logger):
    frame = phrase("hey jarvis")[8000:9280]
    log = logging.getLogger("edge.test")
    log.debug("frame %s", frame)
    log.debug("raw %r", frame.tobytes())
    log.debug("as a field", extra=fields(audio=frame.tobytes()))
    log.debug(frame)
    e = journal.wait(4)
    assert e[0]["MESSAGE"] == "frame <int16 array (1280,) withheld>"
    assert e[1]["MESSAGE"] == "raw <2560 bytes withheld>"  # the same under %r
    assert e[2]["EDGE_AUDIO"] == "<2560 bytes withheld>"
    assert e[3]["MESSAGE"] == "<int16 array (1280,) withheld>"
    assert not any(frame.tobytes()[i:i + 16] in b"".join(journal.raw) for i in range(0, 2560, 16))


def test_stderr_logging_is_guarded_too():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    buf = io.StringIO()
    try:
        handler = configure("debug", {"edge.quiet": "error"}, journal=False, stream=buf)
        assert handler is not None
        logging.getLogger("edge.test").info("clip %s", b"\x01\x02" * 500)
        logging.getLogger("edge.quiet").warning("not shown")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        logging.getLogger("edge.quiet").setLevel(logging.NOTSET)
    assert "clip <1000 bytes withheld>" in buf.getvalue()
    assert "not shown" not in buf.getvalue()


def test_configure_leaves_a_harness_handlers_alone():
    assert configure("debug") is None  # pytest's capture handler is on the root logger


def test_journal_is_used_only_when_stderr_is_the_journal_stream(tmp_path):
    sock = tmp_path / "journal.socket"
    sock.touch()
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        here = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_wanted(here, stream, str(sock))
        assert not journal_wanted({"JOURNAL_STREAM": "1:2"}, stream, str(sock))
        assert not journal_wanted({}, stream, str(sock))
        assert not journal_wanted(here, stream, str(tmp_path / "no-journald"))


RUN_WITH_TEST_JOURNAL = """
import sys
import edge.service.logs
edge.service.logs.JOURNAL_SOCKET = sys.argv[1]
from edge.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_a_full_run_logs_to_the_journal_with_no_audio(journal, tmp_path):
    """The live daemon over a file, under a journal stream: every line goes to journald with
    its fields, and none holds a byte of the input or of the clip it kept."""
    wav = write_wake_wav(tmp_path / "in.wav", 7.0, request="what is the weather like today")
    state = tmp_path / "state"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{state}"\nlog_level = "debug"\n')
    with open(tmp_path / "stderr", "w") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
               "INVOCATION_ID": "0" * 32}
        proc = subprocess.run([sys.executable, "-c", RUN_WITH_TEST_JOURNAL, journal.path, "run",
                               "--config", str(cfg), "--input", str(wav)],
                              stderr=err, stdout=subprocess.DEVNULL, env=env, timeout=120)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
    clips = sorted((state / "clips").glob("*.wav"))
    assert clips, "the run kept no clip"
    entries = journal.wait(4)
    messages = [e["MESSAGE"] for e in entries]
    assert any(m.startswith("listening for hey_jarvis") for m in messages)
    assert any(m.startswith("stopped: 1 detections, 1 clips kept") for m in messages)
    (stop,) = [e for e in entries if e.get("EDGE_EVENT") == "stop"]
    assert (stop["EDGE_DETECTIONS"], stop["EDGE_CLIPS"]) == ("1", "1")
    assert all(e["SYSLOG_IDENTIFIER"] == "edge-recorder" and e["CODE_FILE"] for e in entries)
    assert "listening for" not in (tmp_path / "stderr").read_text()  # not twice
    logged = b"".join(journal.raw)
    rng = np.random.default_rng(0)
    for path in [wav, *clips]:
        samples, _ = sf.read(str(path), dtype="int16")
        loud = np.flatnonzero(np.abs(samples[:-8]) > 200)
        for i in rng.choice(loud, size=300):
            assert samples[i:i + 8].tobytes() not in logged
    assert b"array(" not in logged
