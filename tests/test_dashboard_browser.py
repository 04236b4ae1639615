"""The dashboard in a real headless Chromium, with a live device (real models) on Mosquitto.

Step by step: the device comes online and appears on the page; its activation appears
in its feed; a click on "false" sends the label command, and the device's own
activation log holds the label. Screenshots of each step go to tmp_path, or to
docs/screenshots/ with EDGE_UPDATE_SCREENSHOTS=1 (those are the README's).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.activations.store import ActivationLog, db_path
from tests.fixtures.audio import phrase
from tests.fixtures.mqtt import free_port
from tests.mqtt_helpers import Commander, DeviceRig, LiveSource, device_config

DEVICE = "3f9a1c0d5e7b2a41"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture
def shots(tmp_path: Path) -> Any:
    target = DOCS if os.environ.get("EDGE_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"
    target.mkdir(parents=True, exist_ok=True)

    def take(driver: Any, name: str) -> Path:
        path = target / f"{name}.png"
        driver.save_screenshot(str(path))
        if target == DOCS:  # committed: a 64-colour palette keeps them small
            from PIL import Image

            with Image.open(path) as img:
                small = img.convert("RGB").quantize(colors=64)
            small.save(path, optimize=True)
        return path

    return take


@pytest.fixture
def dashboard(tmp_path: Path, mqtt_broker: Any) -> Any:
    from edge.dashboard.app import Dashboard
    from edge.mqtt.topics import broker_from_url

    dash = Dashboard(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                     tmp_path / "fleet.sqlite3", port=free_port()).start()
    yield dash
    dash.stop()


def wait(driver: Any, cond: Any, timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_a_device_its_activation_and_a_false_label_in_the_browser(
        browser: Any, dashboard: Any, mqtt_broker: Any, tmp_path: Path, shots: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(dashboard.url)
    wait(browser, lambda d: text(d, "#conn") == "live")
    assert text(browser, "#t-devices") == "0"

    # 1. the device comes online and appears on the page
    cfg = device_config(tmp_path / "state", mqtt_broker, name="kitchen pi")
    source = LiveSource(speed=2.0)
    rig = DeviceRig(cfg, source, device_id=DEVICE)
    watcher = Commander(mqtt_broker)
    try:
        row = f"#device-{DEVICE}"
        wait(browser, lambda d: text(d, f"{row} .status") == "online")
        wait(browser, lambda d: text(d, f"{row} .mode") == "listening")
        assert "hey_jarvis 0.50" in text(browser, row)
        # its name from the config, with the pseudonymous id beside it, and not "simulated"
        assert (text(browser, f"{row} .who .name"), text(browser, f"{row} .who .id")) == \
            ("kitchen pi", DEVICE)
        assert text(browser, f"{row} .chip.sim") == "" and text(browser, f"{row} .remove") == ""
        assert text(browser, "#t-online") == "1"
        shots(browser, "1-device-online")

        # 2. an activation appears in its feed
        source.play(np.concatenate([phrase("hey jarvis"), np.zeros(4000, np.int16),
                                    phrase("turn on the kitchen light"),
                                    np.zeros(20000, np.int16)]))
        ev = watcher.wait_for(lambda: watcher.latest(f"edge/{DEVICE}/event/activation"), 60.0)
        act = f"#act-{ev['id']}"
        wait(browser, lambda d: text(d, act) != "")
        assert "hey_jarvis" in text(browser, act)
        assert text(browser, "#t-activations") == "1"
        shots(browser, "2-activation-in-feed")

        # 3. "false" is clicked: the label reaches the device's own activation log
        browser.find_element(By.CSS_SELECTOR, f"{act} button.mark-false").click()
        wait(browser, lambda d: text(d, f"{act} .label-cell") == "false ✓")
        with ActivationLog.open(db_path(cfg), create=False) as store:
            logged = store.get(ev["id"])
        assert logged["label"] == "false" and logged["label_source"] == "dashboard"
        assert text(browser, "#t-false") == "1"
        wait(browser, lambda d: f"kitchen pi ({DEVICE})" in text(d, "#legend"))  # redrawn
        shots(browser, "3-labelled-false")

        # the page follows the device going offline, without a reload
        rig.stop()
        wait(browser, lambda d: text(d, f"{row} .status") == "offline")
        assert browser.execute_script("return window.edgeStats.updates") > 3
    finally:
        rig.stop()
        watcher.close()


def test_a_simulated_fleet_on_the_page(browser: Any, dashboard: Any, mqtt_broker: Any,
                                       shots: Any) -> None:
    from edge.dashboard.simulator import FleetProfile, FleetSimulator
    from edge.mqtt.topics import broker_from_url

    sim = FleetSimulator(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                         FleetProfile(devices=12, state_interval_s=2.0,
                                      activations_per_hour=2400.0, burst_every_s=2.0,
                                      backfill_hours=24.0),
                         seed=3)
    browser.get(dashboard.url)
    wait(browser, lambda d: text(d, "#conn") == "live")
    sim.connect()
    try:
        sim.run(4.0)
        wait(browser, lambda d: text(d, "#t-online") == "12")
        wait(browser, lambda d: int(text(d, "#t-activations") or 0) >= 12)
        time.sleep(2.0)  # the chart redraws shortly after a burst
        assert len(browser.find_elements("css selector", "#chart polyline")) >= 2
        browser.set_window_size(1280, 1120)
        shots(browser, "4-simulated-fleet")
    finally:
        sim.close()
    wait(browser, lambda d: text(d, "#t-online") == "0")


def test_picking_devices_for_the_chart_and_removing_simulated_ones(
        browser: Any, dashboard: Any, mqtt_broker: Any, shots: Any) -> None:
    from selenium.webdriver.common.by import By

    from edge.dashboard.simulator import FleetProfile, FleetSimulator
    from edge.mqtt.topics import broker_from_url

    sim = FleetSimulator(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                         FleetProfile(devices=11, state_interval_s=5.0,
                                      activations_per_hour=2.0, false_fraction=0.5,
                                      backfill_hours=24.0), seed=5)
    browser.get(dashboard.url)
    wait(browser, lambda d: text(d, "#conn") == "live")
    sim.connect()
    try:
        sim.run(0.5)
        wait(browser, lambda d: text(d, "#t-online") == "11")
    finally:
        sim.close()
    wait(browser, lambda d: text(d, "#t-online") == "0")
    chart = dashboard.store.false_per_hour(time.time())
    assert chart["with_false"] > 8, "the seed gives more devices with false wakes than drawn"

    # the chart says it shows only the top 8, and of how many
    wait(browser, lambda d: text(d, "#chart-caption").startswith(
        f"The 8 devices with the most false activations in the last 24 h, of "
        f"{chart['with_false']} that had any"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 9  # + the mean
    first = sim.devices[0]
    row = f"#device-{first.id}"
    assert (text(browser, f"{row} .who .name"), text(browser, f"{row} .who .id"),
            text(browser, f"{row} .chip.sim")) == (first.name, first.id, "simulated")

    # the tester picks two devices: the chart draws those, and says so
    picks = [c["device"] for c in chart["choices"]][-2:]  # the two with the fewest
    browser.find_element(By.CSS_SELECTOR, "#chart-pick summary").click()
    for device in picks:
        browser.find_element(By.CSS_SELECTOR, f"#pick-{device} input").click()
        wait(browser, lambda d, device=device: device in text(d, "#legend"))
    wait(browser, lambda d: text(d, "#chart-caption") ==
         "The 2 devices you picked, and the fleet mean per device.")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 3
    assert text(browser, "#pick-count") == "2 of 8 picked"
    browser.set_window_size(1280, 1200)
    shots(browser, "5-picked-devices-offline-simulated")
    browser.find_element(By.CSS_SELECTOR, "#chart-top").click()
    wait(browser, lambda d: text(d, "#chart-caption").startswith("The 8 devices"))

    # one simulated device is removed (after a confirmation), then all the others
    browser.find_element(By.CSS_SELECTOR, f"{row} button.remove").click()
    alert = wait(browser, lambda d: d.switch_to.alert)
    assert first.name in alert.text and first.id in alert.text
    alert.accept()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    assert text(browser, "#t-devices") == "10"
    assert dashboard.store.device(first.id) is None
    assert dashboard.store.activations(first.id) == []
    browser.find_element(By.CSS_SELECTOR, "#remove-simulated").click()
    wait(browser, lambda d: d.switch_to.alert).accept()
    wait(browser, lambda d: text(d, "#t-devices") == "0")
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.device")
    assert dashboard.store.devices() == []


def test_an_offline_device_ages_out_of_the_page(browser: Any, mqtt_broker: Any,
                                                 tmp_path: Path) -> None:
    from edge.dashboard.app import Dashboard
    from edge.dashboard.ingest import Incoming
    from edge.mqtt.messages import encode, state_message
    from edge.mqtt.topics import broker_from_url

    class Clock:
        t = time.time()

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    dash = Dashboard(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                     tmp_path / "fleet.sqlite3", port=free_port(), offline_after_s=3600.0,
                     clock=clock, sweep_s=0.2).start()
    try:
        items = []
        for device, status, name in ((DEVICE, b"offline", "porch"),
                                     ("0123456789abcdef", b"online", "hall")):
            state = state_message(mode="listening", mute_causes=[], models={"alexa": 0.5},
                                  version="0", uptime_s=1, rtf=0.1, last_activation=None,
                                  false_per_hour=0, wall_time=clock.t, name=name)
            items += [Incoming(f"edge/{device}/state", encode(state).encode(), False, clock.t),
                      Incoming(f"edge/{device}/status", status, False, clock.t)]
        dash.ingest.ingest(items)
        browser.get(dash.url)
        wait(browser, lambda d: text(d, "#conn") == "live")
        wait(browser, lambda d: text(d, f"#device-{DEVICE} .who .name") == "porch")
        assert text(browser, "#t-devices") == "2" and text(browser, "#aged-out") == ""
        clock.t += 3601.0  # an hour on: the offline one ages out, without a reload
        wait(browser, lambda d: text(d, f"#device-{DEVICE}") == "")
        assert text(browser, "#device-0123456789abcdef .who .name") == "hall"
        assert text(browser, "#t-devices") == "1"
        assert text(browser, "#aged-out").startswith(
            "1 device offline for more than 60 min not shown")
        browser.refresh()  # and it stays out of a freshly loaded page
        wait(browser, lambda d: text(d, "#conn") == "live")
        wait(browser, lambda d: text(d, "#device-0123456789abcdef") != "")
        assert text(browser, f"#device-{DEVICE}") == ""
    finally:
        dash.stop()
