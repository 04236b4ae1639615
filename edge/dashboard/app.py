"""The dashboard's web app: Starlette on uvicorn, live updates over Server-Sent Events.

Why Starlette + uvicorn: both are small, pure Python (no compiler on a Pi), well kept,
and asyncio-native, which suits one process that holds a few hundred open SSE
streams; SSE needs no extra package and passes through proxies as plain HTTP.

Routes: ``/`` (the page), ``/events`` (SSE), ``/api/fleet``, ``/api/health``,
``/api/devices/{id}/activations``, ``/api/chart``, ``POST /api/label``.
It binds to 127.0.0.1 by default; any other address needs a password (HTTP Basic).
It answers only requests addressed to one of its own host names (a page whose DNS name
was rebound to 127.0.0.1 sends its own name in ``Host``, and is refused), and takes a
POST only from its own origin (``Origin``, or failing that ``Referer``, must name the
``Host`` it was sent to).

>>> dash = Dashboard(broker_from_url("mqtt://localhost"), Path("fleet.sqlite3"))
>>> dash.run()                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.rules import is_loopback
from edge.dashboard.guards import BasicAuth, SameOriginPosts, allowed_hosts
from edge.dashboard.ingest import Ingestor
from edge.dashboard.store import FleetStore
from edge.errors import UsageError
from edge.mqtt.client import MqttConnection
from edge.mqtt.messages import encode
from edge.mqtt.topics import DEVICE_ID, BrokerSettings

if TYPE_CHECKING:  # the dashboard extra: imported only when the dashboard runs
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CLIENT_QUEUE = 500
"""Updates waiting for one page; a page this far behind is told to reload its snapshot."""
ACTIVATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CSRF_HEADER = "x-edge-dashboard"


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


class Dashboard:
    """The whole dashboard: MQTT subscriber, ingest thread, history, and the web app."""

    def __init__(self, broker: BrokerSettings, db: Path, host: str = "127.0.0.1",
                 port: int = 8080, password: str = "", base: str = "edge",
                 allow_hosts: Sequence[str] = ()) -> None:
        if not is_loopback(host) and not password:
            raise UsageError(f"--host {host} lets other machines in; give --password-file "
                             "with a password, or keep the default 127.0.0.1")
        self.allowed_hosts = allowed_hosts(host, allow_hosts)
        self.broker = broker
        self.host = host
        self.port = port
        self.password = password
        self.base = base
        self.store = FleetStore.open(db)
        self.ingest = Ingestor(self.store, base)
        self.mqtt = MqttConnection(broker, f"edge-dashboard-{uuid.uuid4().hex[:8]}",
                                   on_message=self.ingest.offer)
        self.mqtt.subscribe(f"{base}/+/#")
        self.hub: Hub | None = None
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ---- the web app ------------------------------------------------------------------

    def app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        # Outermost first: a foreign Host is refused before anything else looks at it.
        middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=self.allowed_hosts,
                                 www_redirect=False),
                      Middleware(SameOriginPosts)]
        if self.password:
            middleware.append(Middleware(BasicAuth, password=self.password))
        return Starlette(
            routes=[
                Route("/", self._page),
                Route("/favicon.ico", self._no_icon),
                Route("/events", self._events),
                Route("/api/fleet", self._fleet),
                Route("/api/health", self._health),
                Route("/api/devices/{device}/activations", self._activations),
                Route("/api/chart", self._chart),
                Route("/api/label", self._label, methods=["POST"]),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
            ],
            middleware=middleware, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.hub = Hub(asyncio.get_running_loop())
        self.ingest.notify = self.hub.publish_threadsafe
        self.ingest.start()
        self.mqtt.start()
        log.info("dashboard on %s, following %s/+/# on %s", self.url, self.base,
                 self.broker.where)
        try:
            yield
        finally:
            self.hub.close()
            self.mqtt.stop()
            self.ingest.stop()
            self.store.close()

    async def _page(self, _req: Request) -> Response:
        from starlette.responses import FileResponse

        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' "
                                       "data:; connect-src 'self'",
            "Cache-Control": "no-store"})

    async def _no_icon(self, _req: Request) -> Response:
        from starlette.responses import Response

        return Response(status_code=204)

    async def _events(self, _req: Request) -> Response:
        from starlette.responses import StreamingResponse

        assert self.hub is not None
        hub = self.hub
        q = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        text = await asyncio.wait_for(q.get(), 15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if text is None:
                        return
                    yield f"data: {text}\n\n"
            finally:
                hub.unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _fleet(self, _req: Request) -> Response:
        from starlette.responses import JSONResponse

        now = time.time()
        c = self.ingest.counters
        return JSONResponse({"devices": self.store.devices(), "totals": self.store.totals(now),
                             "ingest": {"received": c.received, "stored": c.stored,
                                        "skipped": c.skipped, "dropped": c.dropped},
                             "time": now})

    async def _health(self, _req: Request) -> Response:
        """The ingest counters alone (cheap: for monitoring and the benchmark)."""
        from starlette.responses import JSONResponse

        c = self.ingest.counters
        return JSONResponse({"mqtt_connected": self.mqtt.connected.is_set(),
                             "ingest": {"received": c.received, "stored": c.stored,
                                        "skipped": c.skipped, "dropped": c.dropped,
                                        "queued": self.ingest.queued, "batches": c.batches},
                             "pages": len(self.hub.clients) if self.hub else 0,
                             "time": time.time()})

    async def _activations(self, req: Request) -> Response:
        from starlette.responses import JSONResponse

        device = req.path_params["device"]
        if not DEVICE_ID.fullmatch(device):
            return JSONResponse({"error": "not a device id"}, status_code=400)
        try:
            limit = min(max(int(req.query_params.get("limit", "50")), 1), 500)
        except ValueError:
            return JSONResponse({"error": "limit must be a whole number"}, status_code=400)
        return JSONResponse(self.store.activations(device, limit))

    async def _chart(self, req: Request) -> Response:
        from starlette.responses import JSONResponse

        try:
            hours = min(max(int(req.query_params.get("hours", "24")), 1), 24 * 14)
        except ValueError:
            return JSONResponse({"error": "hours must be a whole number"}, status_code=400)
        return JSONResponse(self.store.false_per_hour(time.time(), hours))

    async def _label(self, req: Request) -> Response:
        """Send ``cmd/label`` to the device; its answer arrives over MQTT, then SSE."""
        from starlette.responses import JSONResponse

        if req.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"error": f"missing the {CSRF_HEADER} header"},
                                status_code=403)
        try:
            body = await req.json()
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        device, aid, label = body.get("device"), body.get("activation"), body.get("label")
        if not (isinstance(device, str) and DEVICE_ID.fullmatch(device)
                and isinstance(aid, str) and ACTIVATION_ID.fullmatch(aid)
                and label in ("true", "false")):
            return JSONResponse({"error": "give device, activation and label (true or false)"},
                                status_code=400)
        if self.store.activation(device, aid) is None:
            return JSONResponse({"error": f"no activation {aid} of device {device}"},
                                status_code=404)
        tx = uuid.uuid4().hex[:16]
        self.store.label_sent(tx, device, aid, label, time.time())
        self.mqtt.publish(f"{self.base}/{device}/cmd/label",
                          encode({"tx": tx, "activation": aid, "label": label,
                                  "source": "dashboard"}), qos=1)
        return JSONResponse({"tx": tx, "status": "sent"})

    # ---- running ----------------------------------------------------------------------

    def _server(self) -> uvicorn.Server:
        import uvicorn

        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2, access_log=False)
        self.server = uvicorn.Server(config)
        return self.server

    def run(self) -> None:
        """Serve until interrupted (SIGINT/SIGTERM)."""
        self._server().run()

    def start(self, timeout: float = 15.0) -> Dashboard:
        """Serve from a background thread (tests, the benchmark); returns once listening."""
        server = self._server()
        self._thread = threading.Thread(target=server.run, name="dashboard-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise UsageError(f"the dashboard could not listen on {self.host}:{self.port}")
            time.sleep(0.02)
        if not server.started:
            raise UsageError(f"the dashboard did not start within {timeout:g} s")
        return self

    def stop(self) -> None:
        if self.server is not None:
            if self.hub is not None:
                self.hub.loop.call_soon_threadsafe(self.hub.close)
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(15.0)
