"""Who the dashboard answers: its own host names, its own origin, and its password.

* ``Host`` must be one of the dashboard's own names (Starlette's ``TrustedHostMiddleware``
  with ``allowed_hosts``): a web page whose DNS name was rebound to 127.0.0.1 reaches the
  dashboard under its own name, and is refused, so it can read nothing.
* A request that changes something (``POST /api/label``) must come from the dashboard's
  own page (``SameOriginPosts``): ``Origin``, or failing that ``Referer``, names it.
* Any address other than loopback needs a password (``BasicAuth``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge.errors import UsageError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""Host names always accepted (with the bind address and each ``--allow-host``)."""
HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The names a request's ``Host`` may carry: loopback, the bind address, ``extra``.

    >>> allowed_hosts("::1", ["pi.local"])
    ['localhost', '127.0.0.1', '[::1]', 'pi.local']
    """
    names = list(LOCAL_HOSTS)
    with contextlib.suppress(UsageError):  # an unusable bind address is named when binding
        names.append(host_name(bind))
    for given in extra:
        names.append(host_name(given))
    return list(dict.fromkeys(names))


def host_name(given: str) -> str:
    """A host name or IP address as it appears in ``Host`` (IPv6 in brackets), lower case;
    UsageError for anything else (a wildcard, a port, a path)."""
    import ipaddress

    text = given.strip().lower()
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        if HOST_NAME.fullmatch(text):
            return text.rstrip(".")
        raise UsageError(f"--allow-host {given!r} is not a host name or IP address; give "
                         "the name the page is opened by, e.g. --allow-host pi.local") from None
    return f"[{ip}]" if ip.version == 6 else str(ip)


class SameOriginPosts:
    """Refuses (403) any request that changes something unless it comes from this origin.

    A browser names the page that sent a request in ``Origin`` (or, for older ones, in
    ``Referer``); it must be ``http://`` and the very ``Host`` the request was sent to.
    A request naming neither is refused too: the page always sends one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        why = self._refusal(headers.get(b"host", b""),
                            headers.get(b"origin") or headers.get(b"referer"))
        if why is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body",
                    "body": json.dumps({"error": why}).encode()})

    @staticmethod
    def _refusal(host: bytes, origin: bytes | None) -> str | None:
        from urllib.parse import urlsplit

        if origin is None:
            return "no Origin or Referer: only the dashboard's own page may send this"
        try:
            o = urlsplit(origin.decode("ascii"))
            netloc = o.netloc
        except (UnicodeDecodeError, ValueError):
            return "an unreadable Origin"
        if o.scheme != "http" or not netloc or netloc.lower() != host.decode(
                "ascii", "replace").lower():
            return "a request from another origin"
        return None


class BasicAuth:
    """HTTP Basic with one password (any user name); compared in constant time."""

    def __init__(self, app: ASGIApp, password: str) -> None:
        self.app = app
        self.password = password.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._ok(dict(scope["headers"]).get(b"authorization")):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"www-authenticate",
                                 b'Basic realm="edge-recorder dashboard"'),
                                (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"password needed\n"})

    def _ok(self, header: bytes | None) -> bool:
        if not header or not header.startswith(b"Basic "):
            return False
        try:
            _user, _, given = base64.b64decode(header[6:], validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(given, self.password)
