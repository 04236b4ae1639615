"""POSTing clips to an HTTPS receiver (a speech-to-text service or a researcher's collector).

One clip per request. The body is the clip (``Content-Type: audio/wav``, or
``application/vnd.edge-recorder.sealed`` when sealed); the metadata rides in headers:

* ``Idempotency-Key`` and ``X-Edge-Clip-Id``: the clip's UUID (de-duplicate on it)
* ``X-Edge-Device``: the pseudonymous device id
* ``X-Edge-Sha256``: sha256 of the body
* ``X-Edge-Metadata``: the clip's metadata as one line of JSON
* ``Authorization: Bearer <token>`` when ``upload.https.token_file`` is set

Only a 2xx answer takes the clip out of the outbox.

The client is urllib3: small, pure Python, no dependencies of its own, already in
most Python installs (pip vendors it, requests is built on it) and actively
maintained. It verifies certificates, takes a CA bundle and a client certificate,
and has per-operation timeouts; we need nothing more, and a Pi Zero 2 W is
spared httpx's extra packages (httpcore, h11, anyio, sniffio).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from edge.config import HttpsUploadConfig
from edge.errors import UploadError
from edge.privacy.secrets import need_tls_files, read_secret, reason
from edge.upload.destinations import https_destination, wire_metadata
from edge.upload.queue import Entry

log = logging.getLogger(__name__)

_FIX = {
    400: "the receiver calls the request malformed; check that upload.https.url is its clip "
         "endpoint",
    401: "the receiver refused the credentials; check upload.https.token_file",
    403: "the receiver refused the credentials; check upload.https.token_file",
    404: "the receiver has no endpoint at this URL; check upload.https.url",
    405: "the receiver does not take POST at this URL; check upload.https.url",
    408: "the receiver timed out reading the clip; it is retried",
    413: "the receiver refuses clips this large; raise its upload size limit",
    429: "the receiver is rate limiting; it is retried later",
}


class TlsSettings(Protocol):
    """What a section that POSTs over HTTPS says about TLS ([upload.https], [assist.stt])."""

    @property
    def ca(self) -> str: ...
    @property
    def cert(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...


class TlsPool:
    """One verified HTTPS connection, made on first use from ``section``'s TLS files and dropped
    after a failure, so that the next request connects anew."""

    def __init__(self, section: str, tls: TlsSettings) -> None:
        self.section = section
        self.tls = tls
        self._pool: Any = None

    def get(self) -> Any:
        if self._pool is None:
            import urllib3

            t = self.tls
            need_tls_files(self.section, t.ca, t.cert, t.key)
            timeout = urllib3.Timeout(connect=t.timeout_s, read=t.timeout_s)
            self._pool = urllib3.PoolManager(
                num_pools=1, maxsize=1, retries=False, timeout=timeout, cert_reqs="CERT_REQUIRED",
                ca_certs=t.ca or None, cert_file=t.cert or None, key_file=t.key or None)
        return self._pool

    def reset(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None


class HttpsSender:
    def __init__(self, cfg: HttpsUploadConfig, device_id: str) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.destination = https_destination(cfg.url)
        self.pool = TlsPool("upload.https", cfg)

    def headers(self, entry: Entry) -> dict[str, str]:
        meta = wire_metadata(entry.meta, self.device_id, entry.sha256, entry.content_type)
        headers = {
            "Content-Type": entry.content_type,
            "Idempotency-Key": entry.id,
            "X-Edge-Clip-Id": entry.id,
            "X-Edge-Device": self.device_id,
            "X-Edge-Sha256": entry.sha256,
            "X-Edge-Metadata": json.dumps(meta, separators=(",", ":"), sort_keys=True),
            "User-Agent": "edge-recorder",
        }
        token = read_secret(self.cfg.token_file, "upload.https.token_file")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def send(self, entry: Entry, payload: bytes) -> None:
        import urllib3.exceptions as ue

        where = self.destination

        def why(exc: BaseException) -> str:
            return redact(reason(exc), self.cfg.url)

        try:
            r = self.pool.get().request("POST", self.cfg.url, body=payload,
                                             headers=self.headers(entry), redirect=False)
        except ue.SSLError as exc:
            self.pool.reset()
            if "verify failed" in str(exc).lower().replace("_", " "):
                raise UploadError(f"TLS certificate check failed for {where}; set "
                                  "upload.https.ca to the CA certificate that signed the "
                                  "server's (and check the URL's host name)") from None
            raise UploadError(f"TLS handshake with {where} failed ({why(exc)}); check "
                              "upload.https.url, ca, cert and key") from None
        except (ue.NewConnectionError, ue.ConnectTimeoutError) as exc:
            self.pool.reset()
            raise UploadError(f"cannot reach {where} ({why(exc)}); check upload.https.url and "
                              "that the receiver is running") from None
        except (ue.HTTPError, OSError) as exc:
            self.pool.reset()
            raise UploadError(f"the request to {where} failed ({why(exc)}); it is "
                              "retried") from None
        if 200 <= r.status < 300:
            return
        fix = _FIX.get(r.status) or (
            "the receiver failed; fix it, clips wait in the outbox" if r.status >= 500 else
            "the receiver rejected the clip; check upload.https.url and the receiver's log")
        raise UploadError(f"{where} answered HTTP {r.status} {r.reason or ''}".rstrip()
                          + f"; {fix}")

    def close(self) -> None:
        self.pool.reset()


def redact(text: str, url: str, limit: int = 160) -> str:
    """An error's text, one line, with the URL's path and query (maybe secret) taken out."""
    from urllib.parse import urlsplit

    p = urlsplit(url)
    for secret in (url, p.query, p.path if len(p.path) > 1 else ""):
        if secret:
            text = text.replace(secret, "…")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
