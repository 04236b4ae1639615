"""The hand-off core: after a local detection, a *turn* streams the utterance to an assistant.

A turn opens when the recorder starts a recording and an assistant is ready to take it
(a client subscribed); with none, nothing streams and nothing is opened. It carries the
pre-roll (the wake word included) at once, then each frame as the recorder captures it,
and ends at the first of:

- the assistant says speech ended (its VAD, or its run ended): ``end_soon`` from its thread;
- our own VAD (the recording ends on trailing silence, or no speech), or
  ``record.max_record_s``: the recording's end;
- a mute or a cancel (the recording is aborted): the turn is aborted before the next frame
  is read, so no frame captured after the mute edge is handed over.

Everything here runs on the audio thread (the recorder calls this ``RecordingTap``; the
assistant's thread reaches it only through the runner's ``Commands``). The recorder keeps
its usual accounting; the hand-off only copies what it captures. Each turn is a ledger
entry before its first byte is handed over (``sending``) and one when it ends (bytes,
seconds of audio and how it ended).

>>> handoff = HandOff(assistant, ledger, commands, clock)      # doctest: +SKIP
>>> Recorder(..., taps=[handoff])                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.clock import Clock
from edge.pipeline.events import Event, TurnStreamed
from edge.pipeline.recorder import FOLLOW_UP
from edge.pipeline.runner import Commands
from edge.privacy.ledger import Ledger
from edge.wake.policy import Detection

log = logging.getLogger(__name__)

BYTES_PER_SECOND = SAMPLE_RATE * 2
"""16 kHz, 16-bit mono: what every assistant is sent."""

ENDED_BY = {
    "silence": "vad",
    "no_speech": "vad",
    "max_length": "max_record_s",
    "aborted_by_mute": "mute",
    "cancelled_by_user": "cancelled",
    "shutdown": "shutdown",
    "end_of_stream": "end_of_stream",
}
"""How a turn ended, for each reason the recorder ends a recording."""

ABORTED = frozenset({"mute", "cancelled", "shutdown", "disconnected"})
"""Ends after which the assistant is told to drop the utterance, not to answer it."""

FAILED = {
    "disconnected": "the connection closed during the turn",
    "assistant_error": "the assistant refused the turn",
    "no_response": "the assistant did not accept the turn in time",
}
"""Ends that are failures in the ledger, and what it says of each."""
UNSENT = frozenset({"assistant_error", "no_response"})
"""Ends that come before the assistant accepted the turn: its audio was held back, none sent."""


def wake_phrase(model: str) -> str:
    """The wake word's name as an assistant shows it: 'hey_jarvis' -> 'Hey Jarvis' (and
    'micro:okay_nabu' -> 'Okay Nabu': the family prefix is ours, not the word's)."""
    return model.split(":", 1)[-1].replace("_", " ").strip().title()


@dataclass
class Turn:
    """One utterance handed to an assistant."""

    id: str
    """The activation id of the recording it streams."""
    wake_word: str
    """The model that detected it, e.g. 'hey_jarvis'."""
    destination: str
    """Where the audio goes (the ledger's destination), e.g. 'esphome://192.0.2.7:50312'."""
    bytes_sent: int = 0
    """Audio bytes handed to the assistant's connection (it holds them back until the
    assistant accepts the turn: see ``UNSENT``)."""
    ended_by: str = ""
    """'' while open; then vad, max_record_s, mute, cancelled, assistant, disconnected, ..."""

    @property
    def seconds(self) -> float:
        return round(self.bytes_sent / BYTES_PER_SECOND, 3)

    @property
    def open(self) -> bool:
        return not self.ended_by

    @property
    def aborted(self) -> bool:
        return self.ended_by in ABORTED


class Assistant(Protocol):
    """A protocol server that takes turns (ESPHome now, Wyoming next). Each method is called on
    the audio thread and must return at once: it hands the work to its own thread."""

    def destination(self) -> str:
        """Where a turn would go now; '' when no client is ready to take one."""
        ...

    def begin(self, turn: Turn) -> None:
        """A turn opens: ask the assistant to start (the wake word is ``turn.wake_word``)."""
        ...

    def audio(self, turn: Turn, pcm: bytes) -> None:
        """16 kHz 16-bit mono audio of ``turn``, in order."""
        ...

    def end(self, turn: Turn) -> None:
        """``turn`` ended (``turn.ended_by``; ``turn.aborted``: drop it, do not answer)."""
        ...


@dataclass
class HandOffStats:
    turns: int = 0
    not_ready: int = 0
    """Detections with no assistant ready: nothing streamed."""
    unrecorded: int = 0
    """Turns not streamed because the ledger could not be written."""
    by_end: dict[str, int] = field(default_factory=dict)


class HandOff:
    """The recorder's ``RecordingTap``: opens, feeds and ends turns on the audio thread."""

    def __init__(self, assistant: Assistant, ledger: Ledger, commands: Commands,
                 clock: Clock, publish: Callable[[Event], None] = lambda _event: None) -> None:
        self.assistant = assistant
        self.ledger = ledger
        self.commands = commands
        self.clock = clock
        self.publish = publish
        """The event bus: a turn that handed audio over ends in a ``TurnStreamed`` (the
        activity log's line, the activation log's outcome)."""
        self.turn: Turn | None = None
        self.stats = HandOffStats()

    # ---- the recorder's tap (audio thread) ----------------------------------------------

    def recording_started(self, activation_id: str, detection: Detection,
                          pre_roll: np.ndarray) -> None:
        if self.turn is not None:  # cannot happen: a recording ends before the next starts
            self._close("superseded")
        destination = self.assistant.destination()
        if not destination:
            self.stats.not_ready += 1
            log.info("wake word %s heard, but no assistant is connected: nothing streams",
                     detection.model)
            return
        turn = Turn(activation_id, detection.model, destination)
        # Written (and fsynced) before the first byte is handed over, as for every upload;
        # when it cannot be written, nothing is sent.
        try:
            self.ledger.append(clip=activation_id, result="sending", destination=destination,
                               note=f"assist turn, wake word {detection.model}"
                               if detection.model != FOLLOW_UP else
                               "assist follow-up turn: the assistant asked to hear more, "
                               "no wake word")
        except OSError as exc:
            self.stats.unrecorded += 1
            log.error("the ledger cannot be written (%s): the turn is not streamed", exc)
            return
        self.turn = turn
        self.stats.turns += 1
        self.assistant.begin(turn)
        for start in range(0, len(pre_roll), FRAME_SAMPLES):
            self._hand(turn, pre_roll[start:start + FRAME_SAMPLES])

    def recording_frame(self, frame: np.ndarray) -> None:
        if self.turn is not None:
            self._hand(self.turn, frame)

    def recording_ended(self, reason: str) -> None:
        if self.turn is not None:
            self._close(ENDED_BY.get(reason, reason))

    # ---- from the assistant's thread ------------------------------------------------------

    def end_soon(self, turn_id: str, why: str) -> None:
        """The assistant ended turn ``turn_id`` (speech ended, its run ended, an error, the
        connection closed): posted to the audio thread; no frame is handed over after it."""
        def end(_recorder: object) -> None:
            if self.turn is not None and self.turn.id == turn_id:
                self._close(why, tell=False)

        self.commands.post(end)

    # ---- audio thread ---------------------------------------------------------------------

    def _hand(self, turn: Turn, samples: np.ndarray) -> None:
        pcm = samples.astype("<i2", copy=False).tobytes()  # a copy: the recorder zeroes its own
        turn.bytes_sent += len(pcm)
        self.assistant.audio(turn, pcm)

    def _close(self, why: str, tell: bool = True) -> None:
        turn, self.turn = self.turn, None
        assert turn is not None
        turn.ended_by = why
        self.stats.by_end[why] = self.stats.by_end.get(why, 0) + 1
        sent = 0 if why in UNSENT else turn.bytes_sent
        # the ledger hears of the turn's end before the assistant does (as the uploader's
        # ledger hears of a result before the clip leaves the outbox): whoever sees the end
        # finds the ledger complete
        try:
            self.ledger.append(clip=turn.id, result="failed" if why in FAILED else "delivered",
                               destination=turn.destination, bytes=sent,
                               error=FAILED.get(why, ""),
                               note=f"assist turn: {sent / BYTES_PER_SECOND:.2f} s of audio, "
                                    f"ended by {why}")
        except OSError as exc:  # its 'sending' line stands; the audio loop must go on
            log.error("the ledger cannot be written (%s): turn %s ended by %s, %d bytes",
                      exc, turn.id, why, turn.bytes_sent)
        if tell:
            self.assistant.end(turn)
        if sent:  # published on the audio thread: before the activation's ActivationEnded
            self.publish(TurnStreamed(turn.id, turn.destination, turn.wake_word,
                                      round(sent / BYTES_PER_SECOND, 3), sent, why))
        else:
            log.info("assist turn %s ended by %s: no audio was sent", turn.id[:8], why)
