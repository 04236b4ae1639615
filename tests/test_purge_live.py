"""Purge while the recorder runs: every place empty, the ledger told, and the daemon goes on.

The daemons here are real (models, VAD, activation log, outbox, MQTT sender); the upload
broker is a real Mosquitto that is stopped while clips pile up, then started again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge.audio import synth
from edge.clock import SystemClock
from edge.compose.daemon import Seams, build_device
from edge.config import ActivationsConfig, Config, MqttUploadConfig, UploadConfig, replace
from edge.errors import PurgeError, UploadError
from edge.privacy.ledger import read_ledger
from edge.privacy.places import audio_places, ledger_path, outbox_dir
from edge.privacy.retention import files_in
from edge.sinks.dispatch import ClipDispatcher
from edge.upload.plugin import UploadPlugin
from edge.upload.queue import Entry, queued_count
from tests.device import device_seams
from tests.fixtures.audio import phrase
from tests.mqtt_helpers import Commander, DeviceRig, LiveSource, device_config
from tests.upload_helpers import (
    RECORDING_LIGHT,
    SIMULATED_PINS,
    make_clip,
    mqtt_opts,
    upload_cfg,
)
from tests.waiting import wait_for

DEVICE = "0123456789abcdef"


def detection() -> np.ndarray:
    """A wake phrase and a request: one kept clip."""
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("what is the weather like today"), synth.silence(2.0)])


def false_wake() -> np.ndarray:
    """A wake phrase and no request: a likely-false wake (its audio kept when asked)."""
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(4.0)])


LIVE_S = 60.0
"""How long to wait for the live daemon (real-time audio, on a busy machine)."""


def audio_left(cfg: Config) -> dict[str, list[str]]:
    """Files left in each audio place; the outbox index counts only if it lists a clip."""
    left = {p.label: [f.name for f in files_in(p)] for p in audio_places(cfg)
            if p.label != "outbox index"}
    if queued_count(outbox_dir(cfg)):
        left["outbox index"] = ["queued entries"]
    return {k: v for k, v in left.items() if v}


def purged_entries(cfg: Config) -> list[dict[str, Any]]:
    return [e for e in read_ledger(ledger_path(cfg)).entries if e["result"] == "purged"]


class Running:
    """A daemon on its own thread, fed by a LiveSource that never ends by itself."""

    def __init__(self, cfg: Config, seams: Seams) -> None:
        self.source = LiveSource()
        self.device = build_device(cfg, self.source, seams)
        self.daemon = self.device.daemon
        self.thread = threading.Thread(target=self.daemon.run,
                                       kwargs={"install_signals": False}, daemon=True)
        self.thread.start()

    def alive_and_listening(self) -> bool:
        frames = self.source.frames
        wait_for(lambda: self.source.frames > frames + 5, 10.0)
        return self.thread.is_alive()

    def stop(self) -> None:
        self.source.end()
        self.daemon.stop()
        self.thread.join(60.0)


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def start(cfg: Config, **seams: Any) -> Running:
        r = Running(cfg, device_seams(**seams))
        made.append(r)
        return r

    yield start
    for r in made:
        r.stop()


def populate(r: Any, plugin: UploadPlugin, cfg: Config, clips: int) -> None:
    """``clips`` kept clips (queued and local) and one kept false wake; one quarantined file."""
    for _ in range(clips):
        r.source.play(detection())
    r.source.play(false_wake())
    wait_for(lambda: r.daemon.recorder.stats.clips == clips
             and r.daemon.recorder.stats.by_reason.get("no_speech") == 1, LIVE_S)
    r.daemon.dispatcher.flush()
    assert plugin.outbox is not None
    wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == clips, LIVE_S)
    wait_for(lambda: list((cfg.state_path / "false_audio").glob("*.wav")), LIVE_S)
    (outbox_dir(cfg) / "quarantine" / "bad.clip").write_bytes(b"garbled")


def test_live_purge_empties_every_place_and_the_daemon_goes_on(
        mosquitto_broker, mqtt_collector, running, tmp_path):
    broker = mosquitto_broker(persistence=True)
    col = mqtt_collector(broker, "edge-recorder/#", session="purge-collector")
    broker.stop()  # clips stay queued
    cfg = replace(upload_cfg(tmp_path, "mqtt", keep_local=True, mqtt=mqtt_opts(broker)),
                  activations=ActivationsConfig(keep_false_activation_audio=True,
                                                checkpoint_s=0.0))
    r = running(cfg, upload_drain_s=0)
    plugin = r.device.upload
    populate(r, plugin, cfg, clips=2)
    before = [e.id for e in plugin.outbox.pending()]
    wait_for(lambda: plugin.uploader is not None and plugin.uploader.failures >= 1, LIVE_S)

    removed = {x.label: x.files for x in r.device.purge.purge()}

    assert removed["local clips"] == 4 and removed["outbox queue"] == 2
    assert removed["outbox quarantine"] == 1 and removed["false-activation audio"] == 1
    assert removed["outbox index"] >= 1
    assert audio_left(cfg) == {}
    [entry] = purged_entries(cfg)
    assert entry["clip"] == "*" and "while the recorder ran" in entry["note"]
    assert entry["bytes"] > 0
    assert r.alive_and_listening()

    # a later detection is queued on the fresh outbox and leaves once the broker is back
    r.source.play(detection())
    wait_for(lambda: r.daemon.recorder.stats.clips == 3, LIVE_S)
    wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == 1, LIVE_S)
    [later] = [e.id for e in plugin.outbox.pending()]
    broker.start()
    [msg] = col.wait_for(1, timeout=30)
    assert msg.user_properties["id"] == later and later not in before
    wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == 0, LIVE_S)
    delivered = [e["clip"] for e in read_ledger(ledger_path(cfg)).entries
                 if e["result"] == "delivered"]
    assert delivered == [later]


def test_live_purge_with_upload_off_takes_the_clip_in_its_cancel_window(running, tmp_path):
    cfg = upload_cfg(tmp_path, "off", keep_local=True)
    r = running(cfg, cancel_window_s=60.0)
    clips = cfg.under_state(cfg.output.clips_dir)
    r.source.play(detection())
    # finished, but held in memory for its cancel window: nothing on disk yet
    wait_for(lambda: r.daemon.recorder.stats.by_reason.get("silence") == 1, LIVE_S)
    assert r.daemon.recorder.stats.clips == 0 and not list(clips.glob("*"))

    removed = {x.label: x.files for x in r.device.purge.purge()}

    assert removed["local clips"] == 2  # handed over first, then deleted with the rest
    assert r.daemon.recorder.stats.clips == 1
    r.daemon.dispatcher.flush()
    assert audio_left(cfg) == {}
    assert len(purged_entries(cfg)) == 1
    assert not outbox_dir(cfg).exists()  # upload is off: no outbox was ever made
    assert r.alive_and_listening()

    # the daemon goes on: a later clip is kept (its cancel window ends with the daemon)
    r.source.play(detection())
    wait_for(lambda: r.daemon.recorder.stats.by_reason.get("silence") == 2, LIVE_S)
    r.stop()
    assert r.daemon.recorder.stats.clips == 2
    assert len(list(clips.glob("*.wav"))) == 1 and len(list(clips.glob("*.json"))) == 1


def test_mqtt_cmd_purge_on_a_live_recorder(mqtt_broker, mosquitto_broker, tmp_path):
    uploads = mosquitto_broker()
    uploads.stop()
    cfg = replace(device_config(tmp_path / "state", mqtt_broker),
                  upload=UploadConfig(mode="mqtt", retry_min_s=0.05, retry_max_s=0.2,
                                      mqtt=MqttUploadConfig(**mqtt_opts(uploads))),
                  activations=ActivationsConfig(keep_false_activation_audio=True,
                                                checkpoint_s=0.0),
                  hardware=RECORDING_LIGHT, security=SIMULATED_PINS)
    source = LiveSource()
    rig = DeviceRig(cfg, source, device_id=DEVICE, upload_drain_s=0)
    plugin = rig.device.upload
    commander = Commander(mqtt_broker)
    try:
        populate(SimpleNamespace(source=source, daemon=rig.daemon), plugin, cfg, clips=1)
        first = commander.call(DEVICE, "purge")
        assert first["ok"] and not first["done"]
        done = commander.call(DEVICE, "purge", {"confirm": first["confirm"]}, timeout=30)
        assert done["ok"] and done["done"], done
        assert done["removed"]["local clips"] == 2 and done["removed"]["outbox queue"] == 1
        assert done["removed"]["false-activation audio"] == 1
        assert "a recording in progress is kept" in done["note"]
        assert audio_left(cfg) == {}
        assert len(purged_entries(cfg)) == 1
        # still running: it answers, hears, queues and (broker back) delivers
        assert commander.call(DEVICE, "stats")["ok"]
        source.play(detection())
        wait_for(lambda: rig.daemon.recorder.stats.clips == 2, LIVE_S)
        wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == 1, LIVE_S)
        uploads.start()
        wait_for(lambda: plugin.outbox is not None and plugin.outbox.count() == 0, LIVE_S)
    finally:
        commander.close()
        rig.stop()
    assert [e["result"] for e in read_ledger(ledger_path(cfg)).entries][-1] == "delivered"


# -- racing the writers, without the models -----------------------------------------------

class RefusingSender:
    """A destination that is always down: every clip stays queued."""

    destination = "mqtt://127.0.0.1:9"

    def send(self, entry: Entry, payload: bytes) -> None:
        raise UploadError("the broker is down (test)")

    def close(self) -> None:
        pass


def test_purge_racing_the_dispatcher_and_uploader_leaves_no_half_clip(tmp_path):
    from edge.sinks.local import LocalDirSink

    cfg = upload_cfg(tmp_path, "mqtt", keep_local=True, mqtt={"host": "127.0.0.1", "port": 9})
    plugin = UploadPlugin(cfg, SystemClock(), sender=RefusingSender(), drain_s=0)
    assert plugin.sink is not None
    dispatcher = ClipDispatcher([LocalDirSink(cfg.under_state(cfg.output.clips_dir)),
                                 plugin.sink])
    plugin.start()
    # per clip: purges finished before its submit began, purges begun once its submit returned
    submitted: list[tuple[str, int, int]] = []
    count = {"begun": 0, "finished": 0}
    stop = threading.Event()

    def produce() -> None:
        seed = 0
        while not stop.is_set():
            clip = make_clip(0.2, seed=seed, clip_id=str(uuid.uuid4()))
            seed += 1
            finished = count["finished"]
            dispatcher.submit(clip)
            submitted.append((clip.id, finished, count["begun"]))
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for k in range(1, 6):
            time.sleep(0.1)
            count["begun"] = k
            plugin.purge(dispatcher.paused(drop_held=True))
            count["finished"] = k
            ids_before = {cid for cid, _f, b in list(submitted) if b < k}
            clips = cfg.under_state(cfg.output.clips_dir)
            # every clip handed over before the purge began is gone everywhere
            assert not ids_before & {p.stem for p in clips.iterdir()}
            assert plugin.outbox is not None
            assert not ids_before & {e.id for e in plugin.outbox.pending()}
        time.sleep(0.1)
    finally:
        stop.set()
        producer.join()
    dispatcher.close()
    after = [cid for cid, f, _b in submitted if f == 5]
    assert after, "the producer went on after the last purge"
    clips = cfg.under_state(cfg.output.clips_dir)
    stems = [p.stem for p in clips.iterdir()]
    # no half clip: each is there with its sidecar, or not at all; no temp file left
    assert all(stems.count(s) == 2 for s in stems)
    assert not list(clips.glob(".*"))
    assert plugin.outbox is not None
    queued = {e.id for e in plugin.outbox.pending()}
    assert queued == {p.stem for p in (outbox_dir(cfg) / "spool").glob("*.clip")}
    assert set(after) <= queued and set(after) <= set(stems)  # nothing after the purge lost
    assert len(purged_entries(cfg)) == 5
    plugin.close()
    with pytest.raises(PurgeError, match="stopping"):
        plugin.purge(dispatcher.paused())


def test_edge_purge_still_refuses_while_the_recorder_runs(tmp_path):
    from edge.errors import StateLockedError
    from edge.privacy.retention import purge

    cfg = upload_cfg(tmp_path, "off", keep_local=True)
    plugin = UploadPlugin(cfg, SystemClock())
    plugin.start()
    dispatcher = ClipDispatcher([])
    try:
        with pytest.raises(StateLockedError, match="stop it first"):
            purge(cfg)
        # nothing there: nothing to do
        assert all(x.files == 0 for x in plugin.purge(dispatcher.paused()))
        assert not Path(ledger_path(cfg)).exists()  # an empty purge writes no ledger entry
    finally:
        plugin.close()


class FullDisk:
    """A sink on a disk that is full until ``freed``; records what it took."""

    name = "full disk"

    def __init__(self) -> None:
        self.freed = False
        self.taken: list[str] = []

    def deliver(self, clip: Any) -> str:
        if not self.freed:
            raise OSError(28, "No space left on device")
        self.taken.append(clip.id)
        return clip.id

    def close(self) -> None:
        pass


def test_a_pause_for_a_purge_drops_clips_held_for_a_failing_sink():
    sink = FullDisk()
    dispatcher = ClipDispatcher([sink], retry_s=0.05)
    held = make_clip(0.1, seed=1)
    dispatcher.submit(held)
    with dispatcher.paused(drop_held=True) as dropped:
        assert dropped == 1
        sink.freed = True
    later = make_clip(0.1, seed=2)
    dispatcher.submit(later)
    dispatcher.close()
    assert sink.taken == [later.id]  # the dropped clip is never written after the purge
