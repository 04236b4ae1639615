"""The voice assistant hand-off: after a local detection, the utterance streams to an assistant.

``turn`` is the core shared by every assistant protocol (a turn: the pre-roll, then live
frames, until the assistant, our VAD, the cap or a mute ends it; a ledger entry each);
``esphome``, ``session``, ``framing`` and ``discovery`` are the ESPHome native API server
Home Assistant connects to; ``wyoming`` the Wyoming satellite on the same core (both run
on ``server``'s thread and loop, advertised by ``discovery``); ``stt``
sends each utterance to an OpenAI-compatible speech-to-text server instead (its outbox and
retry are the upload subsystem's); ``answer`` plays the assistant's spoken answers (gating
wake detection meanwhile); ``keys`` holds the API key, ``naming`` the name and MAC it reports;
``wakewords`` the wake words the assistant may choose among; ``plugin`` builds them for the
composition root. Only ``[assist] mode`` other than 'off' imports any of them (and
aioesphomeapi or wyoming, the ``assist`` extra).
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "turn": ("Assistant", "HandOff", "Turn", "wake_phrase"),
    "keys": ("decode_key", "key_path", "load_or_create_key", "read_key"),
    "naming": ("check_assist", "check_name", "local_mac"),
    "plugin": ("AssistPlugin", "output_speaker"),
    "answer": ("AnswerPlayer", "PyAudioSpeaker", "Speaker"),
    "wakewords": ("WakeWords",),
    "wyoming": ("WyomingServer", "WyomingSettings"),
    "stt": ("SttClient", "SttSender", "SttTap", "transcribe", "transcription_url"),
})
