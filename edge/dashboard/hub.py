"""The open pages: each update goes to every one, over its Server-Sent Events stream.

It runs on the web app's event loop; the ingest thread hands it updates with
``publish_threadsafe``. A page that falls too far behind is told to reload its snapshot
instead of being sent every update it missed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

CLIENT_QUEUE = 500
"""Updates waiting for one page; a page this far behind is told to reload its snapshot."""


class Hub:
    """Fans each update out to every open page (runs on the event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clients: set[asyncio.Queue[str | None]] = set()
        self.updates = 0

    def publish_threadsafe(self, update: dict[str, Any]) -> None:
        text = json.dumps(update, separators=(",", ":"))
        self.loop.call_soon_threadsafe(self.publish, text)

    def publish(self, text: str) -> None:
        self.updates += 1
        for q in list(self.clients):
            if q.qsize() >= CLIENT_QUEUE:
                while not q.empty():
                    q.get_nowait()
                q.put_nowait('{"resync":true}')
            else:
                q.put_nowait(text)

    def subscribe(self) -> asyncio.Queue[str | None]:
        q: asyncio.Queue[str | None] = asyncio.Queue()
        self.clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str | None]) -> None:
        self.clients.discard(q)

    def close(self) -> None:
        for q in self.clients:
            q.put_nowait(None)
