"""The hand-off core on the real recorder, exact to the frame: a turn is the recording's audio
from the pre-roll on, handed over as it is captured, and ends at the first of the assistant,
our VAD, the cap or a mute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.assist.keys import decode_key, load_or_create_key, read_key
from edge.assist.naming import check_name, local_mac
from edge.assist.turn import HandOff, Turn, wake_phrase
from edge.audio.frames import FRAME_SAMPLES
from edge.clock import FakeClock
from edge.config import RecordConfig
from edge.errors import ConfigError
from edge.pipeline.events import EventBus
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Commands
from edge.privacy.ledger import Ledger, read_ledger
from edge.wake.policy import DetectionPolicy, ModelPolicy
from tests.fakes import LevelVad, ScriptedEngine


class FakeAssistant:
    """An assistant that records what the core hands it, in order."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.calls: list[tuple[str, str]] = []
        self.pcm: list[bytes] = []
        self.ended: list[Turn] = []

    def destination(self) -> str:
        return "fake://assistant" if self.ready else ""

    def begin(self, turn: Turn) -> None:
        self.calls.append(("begin", turn.wake_word))

    def audio(self, turn: Turn, pcm: bytes) -> None:
        self.calls.append(("audio", turn.id))
        self.pcm.append(pcm)

    def end(self, turn: Turn) -> None:
        self.calls.append(("end", turn.ended_by))
        self.ended.append(turn)

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.pcm), dtype="<i2")


def numbered(n: int, loud: set[int]) -> list[np.ndarray]:
    """Frame i holds i % 90 (quiet), or 1000 + i where it counts as speech."""
    return [np.full(FRAME_SAMPLES, 1000 + i if i in loud else i % 90, dtype=np.int16)
            for i in range(n)]


class Rig:
    def __init__(self, tmp_path: Path, fire_at: set[int], ready: bool = True,
                 record: RecordConfig | None = None) -> None:
        self.assistant = FakeAssistant(ready)
        self.commands = Commands()
        self.ledger_path = tmp_path / "ledger.jsonl"
        clock = FakeClock()
        self.handoff = HandOff(self.assistant, Ledger(self.ledger_path, clock), self.commands,
                               clock)
        self.bus = EventBus()
        self.recorder = Recorder(
            ScriptedEngine(fire_at, name="hey_jarvis"),
            DetectionPolicy([ModelPolicy("hey_jarvis", 0.5)]), LevelVad(),
            record or RecordConfig(), 1.5, self.bus, lambda clip: None, clock,
            taps=[self.handoff])

    def feed(self, frames: list[np.ndarray]) -> None:
        """As the audio loop does: commands between frames, then the frame."""
        for f in frames:
            while True:
                try:
                    self.commands.get_nowait()(self.recorder)
                except Exception:  # queue.Empty
                    break
            self.recorder.feed(f)

    def ledger(self) -> list[dict]:  # type: ignore[type-arg]
        return read_ledger(self.ledger_path).entries

    def close(self) -> None:
        self.bus.close()
        self.handoff.ledger.close()


@pytest.fixture
def rig(tmp_path):  # type: ignore[no-untyped-def]
    made: list[Rig] = []

    def make(*args, **kwargs) -> Rig:  # type: ignore[no-untyped-def]
        r = Rig(tmp_path, *args, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_a_turn_is_the_pre_roll_then_each_frame_until_our_vad_ends_it(rig):
    r = rig({40})
    frames = numbered(120, loud=set(range(41, 50)))
    r.feed(frames)
    a = r.assistant
    assert a.calls[0] == ("begin", "hey_jarvis")
    assert a.calls[-1] == ("end", "vad")
    [turn] = a.ended
    # the pre-roll: 19 frames ending with the triggering frame 40, then frames 41 on
    heard = a.samples[::FRAME_SAMPLES]
    assert list(heard[:19]) == list(range(22, 41))
    assert list(heard[19:]) == [1000 + i if i < 50 else i for i in range(41, 41 + len(heard) - 19)]
    # it ends with the recording: 9 frames of speech, then 0.8 s (10 frames) of silence
    assert len(heard) == 19 + 9 + 10
    assert all(len(p) == FRAME_SAMPLES * 2 for p in a.pcm)
    assert turn.bytes_sent == len(heard) * FRAME_SAMPLES * 2
    sending, delivered = r.ledger()
    assert (sending["result"], sending["destination"], sending["bytes"]) == \
        ("sending", "fake://assistant", 0)
    assert delivered["result"] == "delivered" and delivered["bytes"] == turn.bytes_sent
    assert delivered["note"] == f"assist turn: {turn.seconds:.2f} s of audio, ended by vad"
    assert sending["clip"] == delivered["clip"] == turn.id


def test_nothing_streams_and_nothing_is_written_without_a_ready_assistant(rig):
    r = rig({40}, ready=False)
    r.feed(numbered(120, loud=set(range(41, 50))))
    assert r.assistant.calls == []
    assert r.handoff.stats.not_ready == 1
    assert r.ledger() == []
    assert r.recorder.stats.clips == 1  # the recorder kept its usual accounting


def test_prose_without_a_detection_hands_over_nothing(rig):
    r = rig(set())
    r.feed(numbered(500, loud=set(range(0, 500, 3))))
    assert r.assistant.calls == [] and r.ledger() == []


def test_a_mute_aborts_the_turn_before_the_next_frame(rig):
    r = rig({40})
    frames = numbered(120, loud=set(range(41, 80)))
    r.feed(frames[:46])  # the detection at 40, then five live frames
    r.commands.post(lambda rec: rec.mute("switch"))
    r.feed(frames[46:])
    a = r.assistant
    assert a.calls[-1] == ("end", "mute")
    [turn] = a.ended
    assert turn.aborted
    heard = a.samples[::FRAME_SAMPLES]
    assert list(heard[19:]) == [1000 + i for i in range(41, 46)]  # nothing from frame 46 on
    assert "ended by mute" in r.ledger()[-1]["note"]


def test_the_cap_ends_the_turn(rig):
    r = rig({40}, record=RecordConfig(max_record_s=1.0))
    r.feed(numbered(120, loud=set(range(41, 120))))
    [turn] = r.assistant.ended
    assert turn.ended_by == "max_record_s" and not turn.aborted
    assert turn.bytes_sent == (19 + 12) * FRAME_SAMPLES * 2  # 1.0 s: 12 frames (12.5 rounded)


def test_the_assistant_ends_the_turn_and_no_frame_follows(rig):
    r = rig({40})
    frames = numbered(120, loud=set(range(41, 80)))
    r.feed(frames[:44])
    turn_id = r.handoff.turn.id
    r.handoff.end_soon(turn_id, "assistant")  # from its thread: runs before the next frame
    r.feed(frames[44:])
    a = r.assistant
    assert ("end", "assistant") not in a.calls  # it knows: it is not told back
    assert list(a.samples[::FRAME_SAMPLES][19:]) == [1000 + i for i in range(41, 44)]
    assert "ended by assistant" in r.ledger()[-1]["note"]
    assert r.recorder.stats.clips == 1  # the recording itself went on to its own end


def test_a_late_end_for_an_old_turn_is_ignored(rig):
    r = rig({40, 200})
    frames = numbered(300, loud=set(range(41, 50)) | set(range(201, 210)))
    r.feed(frames[:150])
    [first] = r.assistant.ended
    r.feed(frames[150:205])
    r.handoff.end_soon(first.id, "assistant")
    r.feed(frames[205:])
    assert [t.ended_by for t in r.assistant.ended] == ["vad", "vad"]


def test_a_disconnect_is_a_failed_ledger_entry(rig):
    r = rig({40})
    frames = numbered(120, loud=set(range(41, 80)))
    r.feed(frames[:45])
    r.handoff.end_soon(r.handoff.turn.id, "disconnected")
    r.feed(frames[45:])
    last = r.ledger()[-1]
    assert last["result"] == "failed" and last["error"] == "the connection closed during the turn"


def test_wake_phrase_names_the_model():
    assert wake_phrase("hey_jarvis") == "Hey Jarvis"
    assert wake_phrase("alexa") == "Alexa"


def test_the_key_is_made_private_once_and_read_back(tmp_path):
    path = tmp_path / "state" / "assist.key"
    key = load_or_create_key(path)
    assert len(decode_key(key, "x")) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key == read_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others.*chmod 600"):
        read_key(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="does not hold an API key.*edge assist key"):
        read_key(path)


def test_the_mac_address_is_derived_locally_administered_and_rotates_with_the_id():
    a, b = local_mac("0123456789abcdef"), local_mac("fedcba9876543210")
    assert a != b and a == local_mac("0123456789abcdef")
    for mac in (a, b):
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast
        assert len(mac.split(":")) == 6


@pytest.mark.parametrize("name", ["", "-x", "x-", "Kitchen", "a" * 32, "a b", "é"])
def test_a_bad_name_is_refused_with_what_would_do(name):
    with pytest.raises(ConfigError, match=r"assist.name = .* expected 1 to 31 lower-case"):
        check_name(name)


@pytest.mark.parametrize("why,error", [
    ("assistant_error", "the assistant refused the turn"),
    ("no_response", "the assistant did not accept the turn in time"),
])
def test_a_turn_the_assistant_never_accepted_is_a_failure_with_nothing_sent(rig, why, error):
    r = rig({40})
    frames = numbered(120, loud=set(range(41, 80)))
    r.feed(frames[:42])
    r.handoff.end_soon(r.handoff.turn.id, why)
    r.feed(frames[42:])
    last = r.ledger()[-1]
    assert (last["result"], last["error"], last["bytes"]) == ("failed", error, 0)
    assert last["note"] == f"assist turn: 0.00 s of audio, ended by {why}"
