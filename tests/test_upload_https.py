"""Uploading to a real local HTTPS receiver (throwaway CA): headers, auth, 4xx/5xx, bad TLS."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from edge.config import HttpsUploadConfig
from edge.privacy.ledger import read_ledger
from edge.upload.senders.https import HttpsSender
from tests.fixtures.https import make_tls_files
from tests.fixtures.mqtt import free_port
from tests.upload_helpers import DEVICE, errors, rigs


@pytest.fixture
def rig(tmp_path):
    def sender(**kw: Any) -> HttpsSender:
        return HttpsSender(HttpsUploadConfig(**{"timeout_s": 5.0, **kw}), DEVICE)

    with rigs(tmp_path, sender) as make:
        yield make


def test_https_delivers_each_clip_with_its_metadata_and_token(https_receiver, rig, tmp_path,
                                                              caplog):
    rx = https_receiver()
    token = tmp_path / "token"
    token.write_text("s3cret-bearer-token\n")
    r = rig(url=rx.url, ca=str(rx.ca_path), token_file=str(token))
    clips = r.put(4)
    r.wait_empty()
    assert rx.ok_bodies() == clips
    for req in rx.requests:
        cid = req.headers["X-Edge-Clip-Id"]
        assert req.headers["Idempotency-Key"] == cid
        assert req.headers["Content-Type"] == "audio/wav"
        assert req.headers["Authorization"] == "Bearer s3cret-bearer-token"
        assert req.headers["X-Edge-Device"] == DEVICE
        assert req.headers["X-Edge-Sha256"] == hashlib.sha256(req.body).hexdigest()
        meta = json.loads(req.headers["X-Edge-Metadata"])
        assert meta["id"] == cid and meta["model"] == "hey_jarvis"
    entries = read_ledger(r.ledger.path).entries
    assert sorted(e["clip"] for e in entries if e["result"] == "delivered") == sorted(clips)
    assert {e["destination"] for e in entries} == {f"https://127.0.0.1:{rx.port}"}
    assert "s3cret-bearer-token" not in "\n".join(m.getMessage() for m in caplog.records)
    assert "s3cret-bearer-token" not in r.ledger.path.read_text()


@pytest.mark.parametrize(("status", "fix"), [
    (503, "the receiver failed"),
    (500, "the receiver failed"),
    (401, "upload.https.token_file"),
    (404, "upload.https.url"),
    (413, "refuses clips this large"),
])
def test_error_answers_are_reported_once_with_the_fix_then_retried(
        https_receiver, rig, caplog, status, fix):
    rx = https_receiver()
    rx.respond(status, status, status)
    r = rig(url=rx.url, ca=str(rx.ca_path))
    clips = r.put(2)
    r.wait_empty()
    [msg] = errors(caplog, "upload to")
    assert f"HTTP {status}" in msg and fix in msg
    assert rx.ok_bodies() == clips
    results = [e["result"] for e in read_ledger(r.ledger.path).entries]
    assert results.count("failed") == 3 and results.count("delivered") == 2


def test_bad_certificate_is_reported_then_delivered_once_the_ca_is_right(
        https_receiver, rig, tmp_path, caplog):
    rx = https_receiver()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_tls_files(tmp_path / "other").ca.read_bytes())
    r = rig(url=rx.url, ca=str(ca))
    clips = r.put(1)
    r.wait_failures(3)
    [msg] = errors(caplog, "upload to")
    assert "TLS certificate check failed" in msg and "upload.https.ca" in msg
    assert rx.requests == [] and r.outbox.count() == 1
    ca.write_bytes(rx.ca_path.read_bytes())
    r.wait_empty()
    assert rx.ok_bodies() == clips


def test_unreachable_receiver_is_reported_once_and_nothing_is_lost(rig, caplog):
    r = rig(url=f"https://127.0.0.1:{free_port()}/clips")
    r.put(2)
    r.wait_failures(4)
    [msg] = errors(caplog, "upload to")
    assert "cannot reach" in msg and "upload.https.url" in msg
    assert r.outbox.count() == 2


def test_mutual_tls_with_a_client_certificate(https_receiver, rig, caplog):
    rx = https_receiver(require_client_cert=True)
    without = rig(url=rx.url, ca=str(rx.ca_path))
    without.put(1)
    without.wait_failures(2)
    # Under TLS 1.3 the receiver checks the client's certificate only after the client has
    # finished its side of the handshake, so the refusal reaches the client either as the
    # receiver's alert ("certificate required") or as a bare EOF, whichever wins the race;
    # OpenSSL's wording therefore differs between attempts. What holds every time: each
    # report is a TLS handshake failure naming the keys to check, and nothing is delivered.
    reports = errors(caplog, "upload to")
    assert reports
    assert all("TLS handshake" in m and "upload.https.url, ca, cert and key" in m
               for m in reports), reports
    assert rx.ok_bodies() == {}
    assert without.outbox.count() == 1
    with_cert = rig(url=rx.url, ca=str(rx.ca_path), cert=str(rx.tls.client_cert),
                    key=str(rx.tls.client_key))
    clips = with_cert.put(2, seed=10)
    with_cert.wait_empty()
    assert rx.ok_bodies() == clips
