"""Encryption at rest: sealed before touching the disk, unreadable without the private key,
and ``edge decrypt`` restores the exact bytes."""

from __future__ import annotations

import json
import re

import pytest

from edge.cli import main as edge
from edge.compose.config import check_config, load_checked_config
from edge.config import Config, HttpsUploadConfig, UploadConfig
from edge.errors import ConfigError, SealError
from edge.privacy import crypto
from edge.privacy.ledger import Ledger
from edge.sinks.local import LocalDirSink, wav_bytes
from edge.sinks.outbox import OutboxSink
from edge.upload.queue import Outbox
from edge.upload.senders.https import HttpsSender
from edge.upload.uploader import Uploader
from tests.upload_helpers import DEVICE, make_clip


@pytest.fixture
def keys(tmp_path, capsys):
    key = tmp_path / "owner.key"
    assert edge(["decrypt", "--new-key", str(key)]) == 0
    out = capsys.readouterr().out
    public = re.search(r'encrypt_to = "([^"]+)"', out).group(1)
    assert key.stat().st_mode & 0o077 == 0
    return key, public


def decrypt(key, path, out_dir) -> int:
    return edge(["decrypt", "--key", str(key), "--out", str(out_dir), str(path)])


def test_sealed_spool_reveals_nothing_and_decrypt_restores_the_exact_bytes(tmp_path, keys):
    key, public = keys
    clip = make_clip(2.0, seed=3)
    wav = wav_bytes(clip)
    outbox = Outbox(tmp_path / "outbox")
    OutboxSink(outbox, crypto.Sealer(public)).deliver(clip)
    [spool] = (tmp_path / "outbox" / "spool").glob("*.clip")
    data = spool.read_bytes()
    assert wav[44:1044] not in data and b"RIFF" not in data and b"WAVE" not in data
    assert b"hey_jarvis" not in data and str(clip.activation_id).encode() not in data
    # the device itself cannot open its spool: it never had the private key
    other_private, _ = crypto.new_keypair()
    [entry] = outbox.pending()
    with pytest.raises(SealError, match="does not open"):
        crypto.open_sealed(outbox.read(entry), other_private)
    assert decrypt(key, spool, tmp_path / "out") == 0
    assert (tmp_path / "out" / f"{clip.id}.wav").read_bytes() == wav
    meta = json.loads((tmp_path / "out" / f"{clip.id}.json").read_text())
    assert meta == dict(clip.metadata(), file=f"{clip.id}.wav")


def test_local_sink_with_encrypt_to_writes_only_sealed_clips(tmp_path, keys):
    key, public = keys
    clip = make_clip(1.0, seed=4)
    where = LocalDirSink(tmp_path / "clips", crypto.Sealer(public)).deliver(clip)
    assert [p.name for p in (tmp_path / "clips").iterdir()] == [f"{clip.id}.sealed"]
    assert decrypt(key, where, tmp_path / "out") == 0
    assert (tmp_path / "out" / f"{clip.id}.wav").read_bytes() == wav_bytes(clip)


def test_sealed_upload_arrives_sealed_and_decrypts_at_the_receiver(tmp_path, keys,
                                                                   https_receiver):
    key, public = keys
    rx = https_receiver()
    outbox = Outbox(tmp_path / "outbox", ledger=Ledger(tmp_path / "ledger.jsonl"))
    sender = HttpsSender(HttpsUploadConfig(url=rx.url, ca=str(rx.ca_path)), DEVICE)
    clip = make_clip(1.0, seed=5)
    OutboxSink(outbox, crypto.Sealer(public)).deliver(clip)
    up = Uploader(outbox, sender, outbox.ledger)
    up.step()
    [req] = rx.requests
    assert req.headers["Content-Type"] == crypto.SEALED_CONTENT_TYPE
    assert json.loads(req.headers["X-Edge-Metadata"])["id"] == clip.id
    assert "hey_jarvis" not in req.headers["X-Edge-Metadata"]
    received = tmp_path / "received.bin"
    received.write_bytes(req.body)
    assert decrypt(key, received, tmp_path / "out") == 0
    assert (tmp_path / "out" / f"{clip.id}.wav").read_bytes() == wav_bytes(clip)


def test_decrypt_with_the_wrong_key_fails_with_a_clear_message(tmp_path, keys, capsys):
    key, public = keys
    where = LocalDirSink(tmp_path / "clips", crypto.Sealer(public)).deliver(make_clip(0.5))
    wrong = tmp_path / "wrong.key"
    crypto.write_private_key(wrong, crypto.new_keypair()[0])
    assert decrypt(wrong, where, tmp_path / "out") == 1
    assert "does not open the clip" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_decrypt_refuses_plain_files_and_new_key_refuses_to_overwrite(tmp_path, keys, capsys):
    key, _ = keys
    plain = tmp_path / "plain.wav"
    plain.write_bytes(wav_bytes(make_clip(0.2)))
    assert decrypt(key, plain, tmp_path / "out") == 1
    assert "not a sealed clip" in capsys.readouterr().out
    assert edge(["decrypt", "--new-key", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_encrypt_to_must_be_a_public_key(tmp_path):
    with pytest.raises(ConfigError, match="upload.encrypt_to is not a public key"):
        check_config(Config(upload=UploadConfig(encrypt_to="not-a-key")))
    check_config(Config(upload=UploadConfig(encrypt_to=crypto.new_keypair()[1])))
    config = tmp_path / "config.toml"
    config.write_text('[upload]\nencrypt_to = "not-a-key"\n')
    with pytest.raises(ConfigError, match="upload.encrypt_to is not a public key"):
        load_checked_config(config)
