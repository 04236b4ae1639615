"""Each utterance to an OpenAI-compatible speech-to-text server; its transcript back.

faster-whisper-server (speaches), whisper.cpp's server, LocalAI and OpenAI itself all take
``POST /v1/audio/transcriptions``: a multipart form with the audio ``file`` (a WAV here:
16 kHz 16-bit mono), the ``model`` and optionally the ``language``; the JSON answer's
``text`` is the transcript.

The utterance is what a turn of the hand-off core would stream (edge.assist.turn): the
pre-roll (the wake word included) and each frame the recorder captures, until our VAD or
``record.max_record_s`` ends the recording; a mute or a cancel ends it with nothing sent
(the same ``ENDED_BY``/``ABORTED`` rules). ``SttTap`` collects it on the audio thread and
hands it over at once; a thread of its own puts it in an outbox of its own (durable,
bounded as the upload outbox: ``upload.outbox_max_mb``/``outbox_max_clips``) and the
upload subsystem's ``Uploader`` sends it with the upload retry and backoff
(``upload.retry_min_s``/``retry_max_s``), a ledger entry before any byte leaves and one
for each result (the transcript's length, never its text). Nothing blocks the audio loop;
an utterance is dropped only by the outbox's bounds or retention, and the ledger says so.

>>> stt = SttClient.build(cfg, clock, publish=bus.publish)    # doctest: +SKIP
>>> Recorder(..., taps=[stt.tap])                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.assist.turn import ABORTED, ENDED_BY
from edge.audio.frames import SAMPLE_RATE
from edge.audio.wav import encode_wav
from edge.clock import Clock
from edge.config import Config, SttConfig
from edge.errors import UploadError
from edge.pipeline.events import Event, TranscriptReady
from edge.privacy.ledger import Ledger
from edge.privacy.places import STT_OUTBOX_DIR as OUTBOX_DIR
from edge.privacy.places import ledger_path
from edge.privacy.secrets import read_secret, reason
from edge.upload.destinations import https_destination
from edge.upload.queue import Entry, Outbox
from edge.upload.senders.https import TlsPool, redact
from edge.upload.uploader import Uploader
from edge.wake.policy import Detection

log = logging.getLogger(__name__)

PATH = "/v1/audio/transcriptions"
STOP_S = 5.0


def transcription_url(base: str) -> str:
    """The endpoint for ``assist.stt.url``: the base URL with ``PATH`` added, unless the URL
    already names it.

    >>> transcription_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/v1/audio/transcriptions'
    >>> transcription_url("https://stt.lan/v1/audio/transcriptions")
    'https://stt.lan/v1/audio/transcriptions'
    """
    base = base.rstrip("/")
    if base.endswith("/audio/transcriptions"):
        return base
    if base.endswith("/v1"):
        return base + "/audio/transcriptions"
    return base + PATH


class SttSender:
    """The uploader's ``Sender``: one utterance per POST; the transcript goes to ``heard``."""

    def __init__(self, cfg: SttConfig, heard: Callable[[Entry, str], None]) -> None:
        self.cfg = cfg
        self.url = transcription_url(cfg.url)
        self.destination = https_destination(cfg.url)
        self.heard = heard
        self.pool = TlsPool("assist.stt", cfg)

    def send(self, entry: Entry, payload: bytes) -> None:
        import urllib3.exceptions as ue

        where = self.destination
        fields: dict[str, Any] = {"file": (f"{entry.id}.wav", payload, "audio/wav"),
                                  "model": self.cfg.model, "response_format": "json"}
        if self.cfg.language:
            fields["language"] = self.cfg.language
        headers = {"User-Agent": "edge-recorder"}
        token = read_secret(self.cfg.api_key_file, "assist.stt.api_key_file")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = self.pool.get().request("POST", self.url, fields=fields, headers=headers,
                                        redirect=False)
        except ue.SSLError as exc:
            self.pool.reset()
            raise UploadError(f"TLS with {where} failed ({redact(reason(exc), self.cfg.url)}); "
                              "check assist.stt.url, ca, cert and key") from None
        except (ue.HTTPError, OSError) as exc:
            self.pool.reset()
            raise UploadError(f"the request to {where} failed "
                              f"({redact(reason(exc), self.cfg.url)}); check assist.stt.url and "
                              "that the server is running") from None
        if not 200 <= r.status < 300:
            raise UploadError(f"{where} answered HTTP {r.status} {r.reason or ''}".rstrip()
                              + ("; the utterance waits and is sent again" if r.status >= 500
                                 or r.status in (408, 429) else
                                 "; check assist.stt.url, model and api_key_file"))
        try:
            text = json.loads(r.data)["text"]
        except (ValueError, KeyError, TypeError):
            raise UploadError(f"{where} answered without a JSON 'text': is assist.stt.url an "
                              "OpenAI-compatible transcription server?") from None
        self.heard(entry, str(text).strip())

    def close(self) -> None:
        self.pool.reset()


def transcribe(cfg: SttConfig, activation_id: str, samples: np.ndarray) -> str:
    """One utterance's transcript, at once and once (``edge replay``: no outbox, no retry);
    ``UploadError`` says why not."""
    heard: list[str] = []
    sender = SttSender(cfg, lambda _entry, text: heard.append(text))
    wav = encode_wav(samples, SAMPLE_RATE)
    try:
        sender.send(Entry(activation_id, 0.0, len(wav), len(wav), "", "audio/wav", {}, 0, 0.0),
                    wav)
    finally:
        sender.close()
    return heard[0]


class _NotedLedger:
    """The ledger as the uploader writes it, each 'delivered' line noting the transcript's
    length (never its text)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.notes: dict[str, str] = {}

    def append(self, **entry: Any) -> None:
        if entry.get("result") == "delivered":
            entry["note"] = self.notes.pop(entry["clip"], "")
        self.ledger.append(**entry)


@dataclass
class _Utterance:
    activation_id: str
    wake_word: str
    chunks: list[np.ndarray]


class SttTap:
    """The recorder's ``RecordingTap``: collects each utterance on the audio thread and hands
    the finished one to ``put`` (another thread's queue); an aborted one is dropped."""

    def __init__(self, put: Callable[[str, str, np.ndarray], None]) -> None:
        self.put = put
        self.current: _Utterance | None = None
        self.dropped = 0

    def recording_started(self, activation_id: str, detection: Detection,
                          pre_roll: np.ndarray) -> None:
        self.current = _Utterance(activation_id, detection.model, [pre_roll.copy()])

    def recording_frame(self, frame: np.ndarray) -> None:
        if self.current is not None:
            self.current.chunks.append(frame.copy())  # the recorder zeroes its own

    def recording_ended(self, reason: str) -> None:
        utterance, self.current = self.current, None
        if utterance is None:
            return
        ended_by = ENDED_BY.get(reason, reason)
        if ended_by in ABORTED:
            self.dropped += 1
            log.info("activation %s ended by %s: its utterance is not transcribed",
                     utterance.activation_id[:8], ended_by)
            return
        self.put(utterance.activation_id, utterance.wake_word,
                 np.concatenate(utterance.chunks).astype(np.int16, copy=False))


class SttClient:
    """The tap, the outbox and the uploader: started and closed with the daemon."""

    def __init__(self, cfg: Config, clock: Clock,
                 publish: Callable[[Event], None] = lambda _event: None,
                 sender: SttSender | None = None, sleep: Callable[[float], None] | None = None,
                 rng: Any = None) -> None:
        self.publish = publish
        self.clock = clock
        self.ledger = _NotedLedger(Ledger(ledger_path(cfg), clock))
        self.outbox = Outbox(cfg.state_path / OUTBOX_DIR,
                             max_bytes=int(cfg.upload.outbox_max_mb * 1_000_000),
                             max_clips=cfg.upload.outbox_max_clips,
                             ledger=self.ledger.ledger, clock=clock)
        self.sender = sender or SttSender(cfg.assist.stt, self._heard)
        self.sender.heard = self._heard
        self.uploader = Uploader(self.outbox, self.sender, self.ledger,  # type: ignore[arg-type]
                                 retry_min_s=cfg.upload.retry_min_s,
                                 retry_max_s=cfg.upload.retry_max_s, clock=clock, rng=rng,
                                 sleep=sleep, on_delivered=self._delivered)
        self._heard_texts: dict[str, TranscriptReady] = {}
        """Transcripts heard, until the uploader has recorded their delivery (its thread)."""
        self.tap = SttTap(self._hand)
        self._queue: queue.Queue[tuple[str, str, np.ndarray] | None] = queue.Queue()
        self._spooler = threading.Thread(target=self._spool, name="stt-spool", daemon=True)
        self.transcripts = 0

    @property
    def destination(self) -> str:
        return self.sender.destination

    def start(self) -> None:
        self._spooler.start()
        self.uploader.start()
        log.info("speech-to-text: each utterance goes to %s (%d waiting)", self.destination,
                 self.outbox.count())

    def close(self) -> None:
        self._queue.put(None)
        self._spooler.join(STOP_S)
        self.uploader.stop(STOP_S)
        self.sender.close()
        self.outbox.close()
        self.ledger.ledger.close()

    # ---- audio thread -----------------------------------------------------------------------

    def _hand(self, activation_id: str, wake_word: str, samples: np.ndarray) -> None:
        self._queue.put((activation_id, wake_word, samples))

    # ---- the spool thread: to disk, then the uploader ----------------------------------------

    def _spool(self) -> None:
        while (item := self._queue.get()) is not None:
            activation_id, wake_word, samples = item
            meta = {"wake_word": wake_word, "seconds": round(samples.size / SAMPLE_RATE, 3)}
            try:
                self.outbox.put(activation_id, encode_wav(samples, SAMPLE_RATE), "audio/wav",
                                meta)
            except (OSError, ValueError) as exc:  # a full disk: said, not silent
                log.error("the utterance of activation %s could not be queued for %s (%s): "
                          "it is not transcribed", activation_id[:8], self.destination, exc)
                continue
            self.uploader.wake()

    # ---- the uploader's thread -----------------------------------------------------------------

    def _heard(self, entry: Entry, text: str) -> None:
        self.ledger.notes[entry.id] = f"transcript: {len(text)} characters"
        self._heard_texts[entry.id] = TranscriptReady(
            entry.id, self.destination, str(entry.meta.get("wake_word", "")),
            float(entry.meta.get("seconds", 0.0)), text)

    def _delivered(self, entry_id: str) -> None:
        """The ledger says delivered and the outbox let go of it: now the transcript goes
        where the owner said."""
        transcript = self._heard_texts.pop(entry_id, None)
        if transcript is not None:
            self.transcripts += 1
            self.publish(transcript)
