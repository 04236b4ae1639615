"""Purge while the daemon runs (MQTT ``cmd/purge``; ``edge purge`` needs the recorder stopped).

It removes every clip finished before it: the audio loop first hands over a clip
still in its cancel window, the clips queued for the sinks are written, then
everything is deleted with the rest, and clips held in memory for a failing sink are
dropped. A recording in progress is kept when it ends, like any later one.

>>> purge = LivePurge(commands, dispatcher, upload)    # doctest: +SKIP
>>> purge.purge()                                        # doctest: +SKIP
"""

from __future__ import annotations

import logging

from edge.pipeline.runner import Commands, CommandTimeout
from edge.privacy.retention import Removed
from edge.sinks.dispatch import ClipDispatcher
from edge.upload.plugin import UploadPlugin

log = logging.getLogger(__name__)

AUDIO_LOOP_WAIT_S = 3.0
"""How long a purge waits for the audio loop to hand over the clips in their cancel window."""


class LivePurge:
    def __init__(self, commands: Commands, dispatcher: ClipDispatcher,
                 upload: UploadPlugin) -> None:
        self.commands = commands
        self.dispatcher = dispatcher
        self.upload = upload

    def purge(self) -> list[Removed]:
        """What went, per place (and a ``purged`` ledger entry)."""
        self.upload.check_running()
        try:
            self.commands.call(lambda recorder: recorder.release_held(), AUDIO_LOOP_WAIT_S)
        except CommandTimeout:
            log.warning("the audio loop did not answer within %g s; a clip in its cancel "
                        "window may be written after the purge", AUDIO_LOOP_WAIT_S)
        return self.upload.purge(self.dispatcher.paused(drop_held=True))
