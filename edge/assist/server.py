"""The asyncio server each satellite (ESPHome API, Wyoming) runs on a thread of its own.

``LoopServer`` owns what both protocols do alike: the thread and its loop, binding (a
failure is one ``ConfigError`` line from ``start``), the mDNS advertisement while it
listens, each connection's task (so ``close`` waits for the handlers to end), the
connection's closing reasons in the log, and ``_soon``, which hands work from any thread
to the loop. A subclass says what a connection is and how it converses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from edge.assist.discovery import Advertisement
from edge.errors import ConfigError

log = logging.getLogger(__name__)


class LoopServer:
    """A TCP server on its own asyncio loop and thread, advertised on mDNS while it listens."""

    PROTOCOL: ClassVar[str] = ""
    """What the log calls a connection's protocol ('ESPHome API', 'Wyoming')."""
    CLOSED: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError,)
    """What ends a connection in the ordinary way (logged as info, not as a bug)."""

    def __init__(self, host: str, port: int, section: str, thread_name: str) -> None:
        self.port = port
        """The port listened on: once started, the bound one (0 asks for a free one)."""
        self._address = (host, port)
        self._section = section
        """The config section whose ``host`` and ``port`` these are (for the bind error)."""
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.advertisement: Advertisement | None = None

    # ---- to be said by the protocol -------------------------------------------------------

    def _advertise(self) -> Advertisement:
        """The mDNS advertisement, once ``self.port`` is the bound one."""
        raise NotImplementedError

    def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        """A new connection (loop thread): what it is, with a ``peer`` to log."""
        raise NotImplementedError

    async def _converse(self, conn: Any) -> None:
        """Serve ``conn`` until it ends."""
        raise NotImplementedError

    def _gone(self, conn: Any) -> None:
        """``conn`` ended, however (loop thread): forget it and close it."""
        raise NotImplementedError

    def _disconnect_all(self) -> None:
        """Closing: end every connection (each handler then ends on its closed stream)."""
        raise NotImplementedError

    def _listening(self) -> None:
        """Bound and advertised (loop thread): start what runs while the server does."""

    # ---- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Listen (on its own thread); ``ConfigError`` when the address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            host, port = self._address
            raise ConfigError(f"{self._section}.port = {port} on {self._section}.host = "
                              f"{host!r} cannot be listened on ({self._failure}); choose a "
                              "free port, or an address of this machine") from None

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _soon(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` on the loop (any thread); nothing once the server has closed."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # closing: the turn ends with the daemon
            loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # a bind failure: reported by start()
            self._failure = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connected, *self._address)
        self.port = server.sockets[0].getsockname()[1]
        self.advertisement = advertisement = self._advertise()
        self._ready.set()
        self._listening()
        announce = asyncio.create_task(advertisement.start())
        async with server:
            await self._stop.wait()
            self._disconnect_all()
            if self._tasks:  # each connection's handler ends on its closed stream
                await asyncio.wait(self._tasks, timeout=5.0)
        announce.cancel()
        await asyncio.gather(announce, return_exceptions=True)
        await advertisement.close()

    async def _connected(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        conn = self._open(reader, writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self._converse(conn)
        except self.CLOSED as exc:
            log.info("%s client %s: %s", self.PROTOCOL, conn.peer, exc or "connection closed")
        except Exception:  # a bug of ours: this connection ends, the server serves on
            log.exception("%s client %s: closing after an unexpected error", self.PROTOCOL,
                          conn.peer)
        finally:
            self._gone(conn)
