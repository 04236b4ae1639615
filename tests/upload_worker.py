"""A process that queues clips and uploads them to a broker, for the SIGKILL test.

    python -m tests.upload_worker STATE_DIR PORT NEW_CLIPS SEED

Prints ``queued <id> <sha256>`` once a clip is durably in the outbox, ``sending <id>``
just before a clip goes on the wire and ``sent <id>`` after its PUBACK; exits 0 once
the outbox is empty. The test kills it at random moments.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from edge.config import MqttUploadConfig
from edge.privacy.ledger import Ledger
from edge.sinks.local import wav_bytes
from edge.upload.queue import Entry, Outbox
from edge.upload.senders.mqtt import MqttSender
from edge.upload.uploader import Uploader
from tests.upload_helpers import DEVICE, make_clip


class Announcing(MqttSender):
    def send(self, entry: Entry, payload: bytes) -> None:
        print(f"sending {entry.id}", flush=True)
        super().send(entry, payload)
        print(f"sent {entry.id}", flush=True)


def main() -> int:
    state, port, new, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4])
    ledger = Ledger(state / "ledger.jsonl")
    outbox = Outbox(state / "outbox", ledger=ledger)
    sender = Announcing(MqttUploadConfig(host="127.0.0.1", port=port, tls=False,
                                         timeout_s=5.0), DEVICE)
    up = Uploader(outbox, sender, ledger, retry_min_s=0.02, retry_max_s=0.1)
    up.start()
    for i in range(new):
        clip = make_clip(10.0, seed=seed + i)
        wav = wav_bytes(clip)
        outbox.put(clip.id, wav, "audio/wav", clip.metadata())
        print(f"queued {clip.id} {hashlib.sha256(wav).hexdigest()}", flush=True)
        up.wake()
    while outbox.count():
        time.sleep(0.01)
    up.stop()
    sender.close()
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
