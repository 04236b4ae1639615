"""The doctor's ``assist`` check: the voice assistant's API, as ``edge run`` would serve it.

With ``[assist] mode = 'off'`` there is nothing to check (no socket is opened). Otherwise:
plaintext accepted (``assist.allow_unencrypted``) is a warning; the key file must be the
service user's alone (0600, owned by the user the doctor runs as: run it as the service's
user); ``audio.output``, where the answers play, must be an output this machine has; and the
port must be free to listen on, unless the running service holds it.

>>> from edge.config import Config
from edge.errors import EdgeError
>>> [f.detail for f in check_assist(Config(), service_running=None)]
["assist.mode = 'off': no voice assistant, no listening socket"]
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

from edge.config import Config
from edge.errors import EdgeError
from edge.service.findings import Finding, fail, ok, warn

AS_SERVICE_USER = "sudo -u edge-recorder edge doctor --only assist"


def check_assist(cfg: Config, service_running: bool | None) -> Iterator[Finding]:
    a = cfg.assist
    if a.mode == "off":
        yield ok("assist", "assist.mode = 'off': no voice assistant, no listening socket")
        return
    if a.mode == "stt":
        from edge.upload.destinations import https_destination

        yield ok("assist", f"assist.mode = 'stt': each utterance goes to "
                           f"{https_destination(a.stt.url)}; no listening socket")
        return
    if a.mode == "wyoming":
        from edge.config.rules import is_loopback

        if not is_loopback(a.wyoming.host):
            yield warn("assist", f"assist.wyoming.host = {a.wyoming.host!r}: Wyoming has no "
                                 "encryption; any machine that reaches it may connect and "
                                 "receive what the device hears after each wake word",
                       "keep the default '127.0.0.1' (the client on this machine), or trust "
                       "every machine on that network")
        else:
            yield ok("assist", "the Wyoming satellite listens on this machine only")
        yield from _output(cfg)
        yield from _port(cfg, service_running)
        return
    if a.allow_unencrypted:
        yield warn("assist", "assist.allow_unencrypted = true: a client without the key may "
                             "connect and receive what the device hears after each wake word",
                   "remove assist.allow_unencrypted and give Home Assistant the key "
                   "(`edge assist key`)")
    yield from _key(cfg)
    yield from _output(cfg)
    yield from _port(cfg, service_running)


def _output(cfg: Config) -> Iterator[Finding]:
    """Where the answers play (``audio.output``, else the chimes' device): an output device
    this machine has."""
    from edge.assist.answer import answer_device, check_answer_output, plays_answers
    from edge.audio.portaudio import has_output_device

    if not plays_answers(cfg):
        yield ok("assist", "audio.output = 'none': the assistant's answers are not played")
        return
    device, key = answer_device(cfg)
    if not has_output_device():
        # '' plays on the default output if there is one, else the daemon runs without answers
        report = warn if not device else fail
        yield report("assist", f"{key} = {device!r}: this machine has no audio output, so the "
                               "assistant's answers are not played",
                     "connect a speaker (a USB card or the HAT's output), or set audio.output "
                     "= 'none'")
        return
    try:
        check_answer_output(cfg)
    except EdgeError as exc:
        yield fail("assist", str(exc), "name an output `aplay -l` lists in audio.output")
        return
    yield ok("assist", f"the answers play on {key} = {device or 'the default'!r}")


def _key(cfg: Config) -> Iterator[Finding]:
    from edge.assist.keys import key_path

    path = key_path(cfg)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        yield warn("assist", f"no API key yet at {path}: the service makes one when it starts",
                   "run `edge assist key` as the service's user to make it and print it for "
                   "Home Assistant")
        return
    except OSError as exc:
        yield fail("assist", f"the API key {path} cannot be read ({exc.strerror})",
                   f"run the doctor as the service's user ({AS_SERVICE_USER})")
        return
    mode = st.st_mode & 0o777
    if mode & 0o077:
        yield fail("assist", f"the API key {path} is readable by others (mode {mode:o}): the "
                             "service refuses to start",
                   f"chmod 600 {path}, then give Home Assistant a new key: delete the file and "
                   "run `edge assist key`")
        return
    if st.st_uid != os.geteuid():
        yield fail("assist", f"the API key {path} belongs to uid {st.st_uid}, not to this user "
                             f"(uid {os.geteuid()})",
                   f"run the doctor as the service's user ({AS_SERVICE_USER}); if it fails "
                   f"there too: sudo chown edge-recorder: {path}")
        return
    yield ok("assist", f"the API key {path} is private (mode {mode:o}, owned by this user)")


def _port(cfg: Config, service_running: bool | None) -> Iterator[Finding]:
    listens = cfg.assist.listens_on
    assert listens is not None
    host, port = listens
    keys = "assist.wyoming." if cfg.assist.mode == "wyoming" else "assist."
    where = f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            s.bind((host, port))
            s.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and service_running:
            yield ok("assist", f"port {where} is in use: the running service listens there")
            return
        why = ("another program listens there" if exc.errno == errno.EADDRINUSE else
               "not an address of this machine" if exc.errno == errno.EADDRNOTAVAIL else
               "a port below 1024 needs privileges" if exc.errno == errno.EACCES else
               exc.strerror or str(exc))
        yield fail("assist", f"{keys}port = {port} on {keys}host = {host!r} cannot be "
                             f"listened on ({why})",
                   "choose a free port (`ss -ltnp` lists the ones in use) or an address of "
                   "this machine ('0.0.0.0': every interface)")
        return
    yield ok("assist", f"the API can listen on {where}")
