"""The dashboard's web app: Starlette on uvicorn, live updates over Server-Sent Events.

Why Starlette + uvicorn: both are small, pure Python (no compiler on a Pi), well kept,
and asyncio-native, which suits one process that holds a few hundred open SSE
streams; SSE needs no extra package and passes through proxies as plain HTTP.

Routes: ``/`` (the page), ``/events`` (SSE), ``/api/fleet`` (the live view: offline
devices age out of it after ``offline_after_s``), ``/api/health``,
``/api/devices/{id}/activations``, ``/api/chart`` (``?devices=a,b`` picks the devices
drawn), ``POST /api/label``, ``POST /api/devices/remove`` (simulated devices only).
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
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.rules import is_loopback
from edge.dashboard.guards import BasicAuth, SameOriginPosts, allowed_hosts
from edge.dashboard.hub import Hub
from edge.dashboard.ingest import Ingestor
from edge.dashboard.store import CHART_MAX, FleetStore
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
ACTIVATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CSRF_HEADER = "x-edge-dashboard"
OFFLINE_AFTER_S = 24 * 3600.0
"""An offline device leaves the live view after this long (its history stays)."""
SWEEP_S = 30.0
"""How often the pages are told which offline devices have just aged out."""


class Dashboard:
    """The whole dashboard: MQTT subscriber, ingest thread, history, and the web app."""

    def __init__(self, broker: BrokerSettings, db: Path, host: str = "127.0.0.1",
                 port: int = 8080, password: str = "", base: str = "edge",
                 allow_hosts: Sequence[str] = (), offline_after_s: float = OFFLINE_AFTER_S,
                 clock: Callable[[], float] = time.time, sweep_s: float = SWEEP_S) -> None:
        """``offline_after_s``: an offline device leaves the live view this long after it
        was last heard of (0: never); ``clock``: wall time (tests move it on)."""
        if not is_loopback(host) and not password:
            raise UsageError(f"--host {host} lets other machines in; give --password-file "
                             "with a password, or keep the default 127.0.0.1")
        self.allowed_hosts = allowed_hosts(host, allow_hosts)
        self.broker = broker
        self.host = host
        self.port = port
        self.password = password
        self.base = base
        self.offline_after_s = offline_after_s
        self.clock = clock
        self.sweep_s = sweep_s
        self.store = FleetStore.open(db)
        self.ingest = Ingestor(self.store, base, clock=clock, live_since=self.live_since)
        self.mqtt = MqttConnection(broker, f"edge-dashboard-{uuid.uuid4().hex[:8]}",
                                   on_message=self.ingest.offer)
        self.mqtt.subscribe(f"{base}/+/#")
        self.hub: Hub | None = None
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def live_since(self, now: float) -> float | None:
        """The live view's cut-off: offline devices last heard of before it are not shown."""
        return None if self.offline_after_s <= 0 else now - self.offline_after_s

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
                Route("/api/devices/remove", self._remove, methods=["POST"]),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
            ],
            middleware=middleware, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.hub = Hub(asyncio.get_running_loop())
        self.ingest.notify = self.hub.publish_threadsafe
        self.ingest.start()
        self.mqtt.start()
        sweeper = asyncio.create_task(self._sweep_forever(self.hub))
        log.info("dashboard on %s, following %s/+/# on %s", self.url, self.base,
                 self.broker.where)
        try:
            yield
        finally:
            sweeper.cancel()
            self.hub.close()
            self.mqtt.stop()
            self.ingest.stop()
            self.store.close()

    async def _sweep_forever(self, hub: Hub) -> None:
        """Tell the pages which offline devices have aged out since the last look."""
        last = self.live_since(self.clock())
        while True:
            await asyncio.sleep(self.sweep_s)
            now = self.clock()
            since = self.live_since(now)
            if last is not None and since is not None and since > last:
                gone = await asyncio.to_thread(self.store.aged_out, last, since)
                if gone:
                    hub.publish(json.dumps({"gone": gone, "totals": await asyncio.to_thread(
                        self.store.totals, now, live_since=since)}))
            last = since

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

        now = self.clock()
        since = self.live_since(now)
        c = self.ingest.counters
        return JSONResponse({"devices": self.store.devices(since),
                             "totals": self.store.totals(now, live_since=since),
                             "offline_after_s": self.offline_after_s,
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
        picked = None
        if "devices" in req.query_params:
            picked = [d for d in req.query_params["devices"].split(",") if d]
            bad = next((d for d in picked if not DEVICE_ID.fullmatch(d)), None)
            if bad is not None:
                return JSONResponse({"error": f"devices: {bad[:40]!r} is not a device id"},
                                    status_code=400)
            if len(picked) > CHART_MAX:
                return JSONResponse({"error": f"devices: {len(picked)} given; pick at most "
                                              f"{CHART_MAX}"}, status_code=400)
        return JSONResponse(self.store.false_per_hour(self.clock(), hours, picked))

    async def _json_body(self, req: Request) -> dict[str, Any] | Response:
        """The POSTed JSON object, or the response refusing it (the CSRF header, JSON)."""
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
        return body

    async def _remove(self, req: Request) -> Response:
        """Remove simulated devices and their history: ``{"device": id}``, or
        ``{"simulated": "offline"}`` for every offline one. A device that is not simulated,
        or still online, is refused: a real device's history is field data, and an online
        one would be back with its next message."""
        from starlette.responses import JSONResponse

        body = await self._json_body(req)
        if not isinstance(body, dict):
            return body
        device = body.get("device")
        if body.get("simulated") == "offline" and device is None:
            targets = [d["id"] for d in self.store.devices()
                       if d["simulated"] and not d["online"]]
        elif isinstance(device, str) and DEVICE_ID.fullmatch(device) and len(body) == 1:
            found = self.store.device(device)
            if found is None:
                return JSONResponse({"error": f"no device {device}"}, status_code=404)
            if not found["simulated"]:
                return JSONResponse({"error": f"device {device} is not simulated; only "
                                              "simulated devices can be removed"},
                                    status_code=409)
            if found["online"]:
                return JSONResponse({"error": f"device {device} is online; stop the "
                                              "simulator first"}, status_code=409)
            targets = [device]
        else:
            return JSONResponse({"error": 'give {"device": "<id>"} or '
                                          '{"simulated": "offline"}'}, status_code=400)
        now = self.clock()
        await asyncio.to_thread(self.store.remove, targets, now)
        log.info("removed %d simulated device(s) from the dashboard", len(targets))
        if self.hub is not None and targets:
            self.hub.publish(json.dumps({"gone": targets, "removed": True,
                                         "totals": self.store.totals(
                                             now, live_since=self.live_since(now))}))
        return JSONResponse({"removed": targets})

    async def _label(self, req: Request) -> Response:
        """Send ``cmd/label`` to the device; its answer arrives over MQTT, then SSE."""
        from starlette.responses import JSONResponse

        body = await self._json_body(req)
        if not isinstance(body, dict):
            return body
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
        self.store.label_sent(tx, device, aid, label, self.clock())
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
