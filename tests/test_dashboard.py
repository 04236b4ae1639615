"""The dashboard's ingest, history and web API, against a real Mosquitto (no browser)."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main as cli
from edge.dashboard.app import Dashboard
from edge.dashboard.ingest import Incoming, Ingestor
from edge.dashboard.simulator import FleetProfile, FleetSimulator
from edge.dashboard.store import FleetStore
from edge.errors import UsageError
from edge.mqtt.messages import activation_message, encode, state_message
from edge.mqtt.topics import broker_from_url
from tests.fixtures.mqtt import free_port
from tests.mqtt_helpers import Commander
from tests.waiting import wait_for

DEV = "0123456789abcdef"


def state(mode: str = "listening", t: float | None = None) -> bytes:
    return encode(state_message(mode=mode, mute_causes=[], models={"hey_jarvis": 0.5},
                                version="0.1.0", uptime_s=5, rtf=0.1, last_activation=None,
                                false_per_hour=0, wall_time=t or time.time())).encode()


def activation(aid: str, likely_false: bool = False, t: float | None = None) -> bytes:
    return encode(activation_message(activation_id=aid, wall_time=t or time.time(),
                                     model="hey_jarvis", score=0.8, threshold=0.5,
                                     reason="no_speech" if likely_false else "silence",
                                     duration_s=2.0, likely_false=likely_false,
                                     kept=not likely_false)).encode()


def msg(topic: str, payload: bytes, retain: bool = False) -> Incoming:
    return Incoming(topic, payload, retain, time.time())


@pytest.fixture
def ingestor(tmp_path: Path) -> Any:
    store = FleetStore.open(tmp_path / "fleet.sqlite3")
    yield Ingestor(store)
    store.close()


@pytest.fixture
def dashboard(tmp_path: Path, mqtt_broker: Any) -> Any:
    made: list[Dashboard] = []

    def start(**kw: Any) -> Dashboard:
        d = Dashboard(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                      tmp_path / f"fleet{len(made)}.sqlite3", port=free_port(), **kw).start()
        assert d.mqtt.wait_connected(10.0)
        made.append(d)
        return d

    yield start
    for d in made:
        d.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_messages_become_history_and_one_update_per_batch(ingestor: Ingestor) -> None:
    up = ingestor.ingest([msg(f"edge/{DEV}/status", b"online"),
                          msg(f"edge/{DEV}/state", state()),
                          msg(f"edge/{DEV}/event/activation", activation("a1", True)),
                          msg(f"edge/{DEV}/event/activation", activation("a1", True))])
    assert [d["id"] for d in up["devices"]] == [DEV]
    assert [a["id"] for a in up["activations"]] == ["a1"]  # a re-delivery is stored once
    assert up["totals"]["online"] == 1 and up["totals"]["false"] == 1
    dev = ingestor.store.device(DEV)
    assert dev is not None and dev["online"] and dev["state"]["mode"] == "listening"
    up = ingestor.ingest([msg(f"edge/{DEV}/cmd/label/result", encode(
        {"command": "label", "tx": None, "ok": True, "activation": "a1",
         "label": "true"}).encode())])
    assert up["labels"][0]["label"] == "true"
    assert ingestor.store.activations(DEV)[0]["label"] == "true"
    assert ingestor.store.totals(time.time())["false"] == 0
    chart = ingestor.store.false_per_hour(time.time())
    assert len(chart["hours"]) == 24 and chart["series"] == []


BROKEN = [
    (f"edge/{DEV}/status", b"maybe"),
    (f"edge/{DEV}/state", b"\xff\xfe"),
    (f"edge/{DEV}/state", b"[1, 2]"),
    (f"edge/{DEV}/state", b'{"mode": "dancing"}'),
    (f"edge/{DEV}/state", b'{"mode": "listening", "models": []}'),
    (f"edge/{DEV}/event/activation", b'{"id": 5}'),
    (f"edge/{DEV}/event/activation", activation("a2").replace(b'"score":0.8', b'"score":"x"')),
    (f"edge/{DEV}/event/activation", b"{" * 5000),
    (f"edge/{DEV}/something/else", b"{}"),
    ("edge/not a device!/state", state()),
    (f"edge/{DEV}/state", b'{"pad": "' + b"x" * 70000 + b'"}'),
    (f"edge/{DEV}/cmd/label/result", b'{"ok": true}'),
]


def test_broken_messages_from_other_publishers_are_logged_and_skipped(
        ingestor: Ingestor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "edge.dashboard.ingest")
    ingestor.ingest([msg(t, p) for t, p in BROKEN] +
                    [msg(f"edge/{DEV}/event/activation", activation("r1"), retain=True)])
    assert ingestor.counters.skipped == len(BROKEN) + 1
    assert ingestor.counters.stored == 0
    assert ingestor.store.devices() == []
    assert len([r for r in caplog.records if "skipped a broken message" in r.message]) == \
        len(BROKEN) + 1
    up = ingestor.ingest([msg(f"edge/{DEV}/state", state())])  # and it goes on
    assert up["devices"][0]["state"]["mode"] == "listening"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(rest=st.sampled_from(["status", "state", "event/activation", "cmd/label/result",
                             "cmd/mute", "x"]),
       payload=st.one_of(st.binary(max_size=300),
                         st.recursive(st.none() | st.booleans() | st.floats() | st.text(),
                                      lambda k: st.lists(k) | st.dictionaries(st.text(), k),
                                      max_leaves=20).map(lambda o: json.dumps(o).encode())),
       retain=st.booleans())
def test_no_message_can_break_the_ingest(ingestor: Ingestor, rest: str, payload: bytes,
                                         retain: bool) -> None:
    before = ingestor.counters.received
    ingestor.ingest([msg(f"edge/{DEV}/{rest}", payload, retain)])
    assert ingestor.counters.received == before + 1


def test_live_updates_and_a_label_round_trip_over_mqtt(dashboard: Any, mqtt_broker: Any) -> None:
    dash = dashboard()
    sim = FleetSimulator(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                         FleetProfile(devices=3, state_interval_s=1.0,
                                      activations_per_hour=3600.0), seed=1)
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    sim.connect()
    try:
        sim.run(2.5)
        seen: set[str] = set()

        def three_devices() -> bool:
            line = resp.fp.readline()
            if line.startswith(b"data: "):
                seen.update(d["id"] for d in json.loads(line[6:]).get("devices", []))
            return len(seen) >= 3

        wait_for(three_devices, 10, "updates of three devices on /events", poll_s=0)
        assert seen == {d.id for d in sim.devices}
        status, fleet = get(f"{dash.url}api/fleet")
        assert fleet["totals"]["online"] == 3 and fleet["totals"]["activations"] >= 1
        dev = next(d for d in fleet["devices"] if d["state"]["last_activation"])
        aid = dev["state"]["last_activation"]["id"]
        status, body = post(f"{dash.url}api/label", {"device": dev["id"], "activation": aid,
                                                     "label": "false"},
                            {"x-edge-dashboard": "1", "origin": dash.url.rstrip("/")})
        assert status == 200 and body["status"] == "sent"
        sim.run(1.0)  # the simulated device answers
        wait_for(lambda: (dash.store.label_status(body["tx"]) or {}).get("status") == "ok", 10,
                 "the label to be confirmed", poll_s=0.05)
        assert dash.store.activation(dev["id"], aid)["label"] == "false"
        assert next(iter(sim.devices[i].labels for i in range(3)
                         if sim.devices[i].id == dev["id"])) == {aid: "false"}
    finally:
        sim.close()
        conn.close()


def test_label_api_refuses_bad_requests(dashboard: Any) -> None:
    dash = dashboard()
    ok_headers = {"x-edge-dashboard": "1", "origin": dash.url.rstrip("/")}
    assert post(f"{dash.url}api/label", {"device": DEV, "activation": "a", "label": "false"},
                {"origin": dash.url.rstrip("/")})[0] == 403  # a cross-site form cannot set it
    assert post(f"{dash.url}api/label", b"not json", ok_headers)[0] == 400
    assert post(f"{dash.url}api/label", {"device": "../x", "activation": "a",
                                         "label": "false"}, ok_headers)[0] == 400
    assert post(f"{dash.url}api/label", {"device": DEV, "activation": "a",
                                         "label": "maybe"}, ok_headers)[0] == 400
    assert post(f"{dash.url}api/label", {"device": DEV, "activation": "nope",
                                         "label": "false"}, ok_headers)[0] == 404
    assert get(f"{dash.url}api/devices/bad%20id/activations")[0] == 400


def test_other_addresses_need_a_password(dashboard: Any, mqtt_broker: Any,
                                         tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="password"):
        Dashboard(broker_from_url(f"mqtt://127.0.0.1:{mqtt_broker.port}"),
                  tmp_path / "x.sqlite3", host="0.0.0.0")
    dash = dashboard(password="s3cret")
    assert get(f"{dash.url}api/fleet")[0] == 401
    bad = base64.b64encode(b"edge:wrong").decode()
    assert get(f"{dash.url}api/fleet", {"authorization": f"Basic {bad}"})[0] == 401
    good = base64.b64encode(b"edge:s3cret").decode()
    assert get(f"{dash.url}api/fleet", {"authorization": f"Basic {good}"})[0] == 200


def test_cli_refuses_bad_arguments_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["dashboard", "--broker", "http://example"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mqtt://HOST" in err
    assert cli(["dashboard", "--broker", "mqtt://u:p@host"]) == 2
    assert "--broker-password-file" in capsys.readouterr().err
    assert cli(["simulate-fleet", "--broker", "mqtt://localhost", "--devices", "0"]) == 2
    assert "--devices must be" in capsys.readouterr().err
    assert cli(["dashboard", "--broker", "mqtt://localhost", "--base", "edge/#"]) == 2
    assert "--base" in capsys.readouterr().err
    assert cli(["dashboard", "--broker", "mqtt://localhost", "--allow-host", "*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-host '*' is not a host name" in err


def test_device_and_simulator_speak_the_same_format(mqtt_broker: Any) -> None:
    """What the simulator publishes passes the dashboard's checks unchanged."""
    from edge.mqtt.messages import check_activation, check_state, decode_object

    watch = Commander(mqtt_broker)
    sim = FleetSimulator(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                         FleetProfile(devices=2, state_interval_s=1.0,
                                      activations_per_hour=7200.0), seed=2)
    sim.connect()
    try:
        sim.run(2.0)
    finally:
        sim.close()
    watch.wait_for(lambda: any(t.endswith("/event/activation") for t, _, _ in watch.messages))
    names = {}
    for topic, payload, _r in watch.messages:
        if topic.endswith("/state") and payload:
            st = check_state(decode_object(payload))
            assert st["simulated"] is True  # the simulator says so in every state
            names[topic.split("/")[1]] = st["name"]
        elif topic.endswith("/event/activation"):
            check_activation(decode_object(payload))
    assert names == {d.id: d.name for d in sim.devices} and set(names.values()) == {
        "kitchen 1", "living room 1"}
    watch.close()


# ---- the dashboard serves only its own origin ---------------------------------------------

def raw(dash: Dashboard, method: str, path: str, headers: dict[str, str],
        body: bytes = b"") -> int:
    """The status of one request sent with exactly these headers (Host included)."""
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body or None)
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_page_rebound_to_loopback_reads_nothing_and_sends_nothing(dashboard: Any) -> None:
    """DNS rebinding: the attacker's page reaches 127.0.0.1, but under its own host name."""
    dash = dashboard(allow_hosts=["pi.local"])
    label = json.dumps({"device": DEV, "activation": "a", "label": "true"}).encode()
    for host in ("attacker.example", f"attacker.example:{dash.port}", "127.0.0.1.nip.io",
                 "pi.local.attacker.example", "0x7f000001", ""):
        for path in ("/", "/api/fleet", "/api/health", f"/api/devices/{DEV}/activations",
                     "/api/chart", "/static/app.js", "/events"):
            assert raw(dash, "GET", path, {"host": host}) == 400, (host, path)
        assert raw(dash, "POST", "/api/label", {
            "host": host, "origin": f"http://{host}", "x-edge-dashboard": "1",
            "content-type": "application/json"}, label) == 400, host
    for host in (f"127.0.0.1:{dash.port}", f"localhost:{dash.port}", "LOCALHOST",
                 f"[::1]:{dash.port}", f"pi.local:{dash.port}"):
        assert raw(dash, "GET", "/api/fleet", {"host": host}) == 200, host


def test_label_posts_are_taken_only_from_the_dashboards_own_origin(dashboard: Any) -> None:
    dash = dashboard()
    here = f"127.0.0.1:{dash.port}"
    label = json.dumps({"device": DEV, "activation": "nope", "label": "true"}).encode()

    def send(**extra: str) -> int:
        return raw(dash, "POST", "/api/label", {"host": here, "x-edge-dashboard": "1",
                                                 "content-type": "application/json", **extra},
                   label)

    for origin in ("http://attacker.example", "null", f"https://{here}",
                   f"http://127.0.0.1:{dash.port + 1}", f"http://localhost:{dash.port}",
                   f"http://{here}.attacker.example", "http://", "\u00e9"):
        assert send(origin=origin) == 403, origin
    assert send(referer="http://attacker.example/page") == 403
    assert send() == 403  # neither: not the dashboard's page
    # its own page (Origin, or an older browser's Referer) gets through to the checks
    assert send(origin=f"http://{here}") == 404
    assert send(referer=f"http://{here}/") == 404
    assert send(origin=f"http://{here}", referer="http://attacker.example/") == 404


def test_allow_host_takes_only_host_names(mqtt_broker: Any, tmp_path: Path) -> None:
    broker = broker_from_url(f"mqtt://127.0.0.1:{mqtt_broker.port}")
    for bad in ("*", "*.example", "pi.local:8080", "http://pi.local", "a b", ""):
        with pytest.raises(UsageError, match="--allow-host"):
            Dashboard(broker, tmp_path / "x.sqlite3", allow_hosts=[bad])


# ---- ingest: each message is checked alone, and the counters tell the truth ------------

DEV_B, DEV_C = "1111111111111111", "2222222222222222"
HUGE = "9" * 400
"""A whole number no float (nor SQLite) can hold."""


def stored_activations(store: FleetStore) -> set[tuple[str, str]]:
    return {(d, a) for d, a in store.conn.execute("SELECT device, id FROM activations")}


def test_one_poisoned_message_leaves_the_rest_of_its_batch_stored(ingestor: Ingestor) -> None:
    poisoned = activation("p1").replace(b'"score":0.8', f'"score":{HUGE}'.encode())
    assert HUGE.encode() in poisoned
    up = ingestor.ingest([msg(f"edge/{DEV}/status", b"online"),
                          msg(f"edge/{DEV}/event/activation", activation("a1")),
                          msg(f"edge/{DEV_B}/event/activation", poisoned),
                          msg(f"edge/{DEV_C}/event/activation", activation("a2")),
                          msg(f"edge/{DEV_C}/state", state())])
    c = ingestor.counters
    assert (c.received, c.stored, c.skipped) == (5, 4, 1)
    assert stored_activations(ingestor.store) == {(DEV, "a1"), (DEV_C, "a2")}
    assert [a["id"] for a in up["activations"]] == ["a1", "a2"]
    assert {d["id"] for d in ingestor.store.devices()} == {DEV, DEV_C}
    assert up["ingest"] == {"received": 5, "stored": 4, "skipped": 1, "dropped": 0}


def test_a_message_the_database_refuses_is_skipped_alone(ingestor: Ingestor) -> None:
    """Any failure, not only a malformed field: here the real database refuses one row."""
    ingestor.store.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON activations WHEN NEW.id = 'refused' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    ingestor.ingest([msg(f"edge/{DEV}/event/activation", activation("a1")),
                     msg(f"edge/{DEV_B}/event/activation", activation("refused")),
                     msg(f"edge/{DEV_B}/state", state()),
                     msg(f"edge/{DEV_C}/event/activation", activation("a2"))])
    c = ingestor.counters
    assert (c.received, c.stored, c.skipped) == (4, 3, 1)
    assert stored_activations(ingestor.store) == {(DEV, "a1"), (DEV_C, "a2")}
    assert ingestor.store.device(DEV_B)["state"]["mode"] == "listening"


NUMBER_FIELDS = ("wall_time", "score", "threshold", "duration_s")
wild_numbers = st.one_of(
    st.integers(), st.integers(min_value=2**52, max_value=10**400),
    st.integers(min_value=2**52, max_value=10**400).map(lambda n: -n),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.booleans(), st.none())


@given(fields=st.lists(st.tuples(st.sampled_from(NUMBER_FIELDS), wild_numbers),
                       min_size=1, max_size=12),
       ids=st.lists(st.text(min_size=0, max_size=70), min_size=12, max_size=12))
def test_the_counters_always_equal_what_is_in_the_database(
        fields: list[tuple[str, Any]], ids: list[str]) -> None:
    """Cases per the project's hypothesis profile (tests/fixtures/fuzz.py)."""
    store = FleetStore.open(Path(":memory:"))
    ingestor = Ingestor(store)
    try:
        batch = []
        for i, (name, value) in enumerate(fields):
            event = json.loads(activation(f"good{i}"))
            event[name] = value
            event["id"] = ids[i] if i % 2 else event["id"]  # strange ids too
            batch.append(msg(f"edge/{DEV}{i:02d}/event/activation",
                             json.dumps(event).encode()))
        up = ingestor.ingest(batch)
        c = ingestor.counters
        in_db = stored_activations(store)
        assert c.received == len(batch)
        assert c.stored == len(in_db) and c.stored + c.skipped == len(batch)
        assert {(a["device"], a["id"]) for a in up.get("activations", [])} == in_db
        assert {d["id"] for d in store.devices()} == {d for d, _ in in_db}
    finally:
        store.close()


# ---- field work: names, the chart's devices, simulated devices, aging out -----------------

def named_state(name: str = "", simulated: bool = False, t: float | None = None) -> bytes:
    return encode(state_message(mode="listening", mute_causes=[], models={"hey_jarvis": 0.5},
                                version="0.1.0", uptime_s=5, rtf=0.1, last_activation=None,
                                false_per_hour=0, wall_time=t or time.time(), name=name,
                                simulated=simulated)).encode()


class Clock:
    """Wall time that a test moves on."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def at(t: float, topic: str, payload: bytes, retain: bool = False) -> Incoming:
    return Incoming(topic, payload, retain, t)


def test_a_device_name_is_set_in_the_config_and_refused_in_one_line(tmp_path: Path) -> None:
    from edge.config import load_config
    from edge.errors import ConfigError

    good = tmp_path / "good.toml"
    good.write_text('[mqtt]\nname = "kitchen pi"\n')
    assert load_config(good).mqtt.name == "kitchen pi"
    for bad, why in (('"a\\u0007b"', "control or invisible"), ('"evil\\u202egnp"', "invisible"),
                     ('"line\\nbreak"', "control"), ('" padded"', "space"),
                     (f'"{"x" * 41}"', "41 characters")):
        path = tmp_path / "bad.toml"
        path.write_text(f"[mqtt]\nname = {bad}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith("mqtt.name = ") and why in str(err.value)
        assert "\n" not in str(err.value) and "give 1 to 40 printable" in str(err.value)


def test_the_cli_refuses_a_bad_name_in_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[mqtt]\nname = "two\\nlines"\n')
    assert cli(["config", "check", "--no-devices", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mqtt.name = 'two\\nlines'" in err


def test_a_name_travels_in_the_state_and_is_shown_beside_the_id(ingestor: Ingestor) -> None:
    up = ingestor.ingest([msg(f"edge/{DEV}/status", b"online"),
                          msg(f"edge/{DEV}/state", named_state("kitchen pi")),
                          msg(f"edge/{DEV_B}/state", named_state())])
    by_id = {d["id"]: d for d in up["devices"]}
    assert by_id[DEV]["name"] == "kitchen pi" and by_id[DEV]["simulated"] is False
    assert by_id[DEV_B]["name"] is None
    # a name the config would refuse is refused in a message too (another publisher's)
    ingestor.ingest([msg(f"edge/{DEV_C}/state", named_state("x\u202ey"))])
    assert ingestor.store.device(DEV_C) is None and ingestor.counters.skipped == 1


def test_an_older_history_gains_names_when_opened(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, online INTEGER NOT NULL "
                    "DEFAULT 0, status_time REAL, state TEXT, state_time REAL, "
                    "first_seen REAL NOT NULL, last_seen REAL NOT NULL)")
        old.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?, 1, 1)", (DEV,))
    store = FleetStore.open(path)
    try:
        assert store.devices() == [{"id": DEV, "name": None, "simulated": False,
                                    "online": False, "state": None, "state_time": None,
                                    "last_seen": 1.0}]
    finally:
        store.close()


def test_the_chart_says_which_devices_it_draws_and_draws_the_ones_picked(
        dashboard: Any) -> None:
    dash = dashboard()
    now = time.time()
    ids = [f"{i:016x}" for i in range(11)]  # device i has i false wakes
    items = [msg(f"edge/{d}/state", named_state(f"room {i}")) for i, d in enumerate(ids)]
    for i, d in enumerate(ids):
        items += [msg(f"edge/{d}/event/activation", activation(f"f{i}x{k}", True, now - 60))
                  for k in range(i)]
    dash.ingest.ingest(items)
    status, chart = get(f"{dash.url}api/chart?hours=24")
    assert status == 200 and chart["shown"] == "top" and chart["top"] == 8
    assert chart["with_false"] == 10  # device 0 had none
    assert [s["device"] for s in chart["series"]] == ids[:2:-1]  # the 8 with the most
    assert chart["series"][0]["name"] == "room 10"
    assert [c["device"] for c in chart["choices"]] == ids[::-1]  # all, most first
    status, chart = get(f"{dash.url}api/chart?hours=24&devices={ids[0]},{ids[3]}")
    assert status == 200 and chart["shown"] == "picked"
    assert [(s["device"], sum(s["values"])) for s in chart["series"]] == [(ids[0], 0),
                                                                          (ids[3], 3)]
    status, err = get(f"{dash.url}api/chart?devices={','.join(ids[:9])}")
    assert status == 400 and b"pick at most 8" in err
    status, err = get(f"{dash.url}api/chart?devices=bad%2Fid")
    assert status == 400 and b"'bad/id' is not a device id" in err


SIM = "sim0123456789abc"


def test_a_simulated_device_is_marked_and_can_be_removed_with_its_history(
        dashboard: Any) -> None:
    dash = dashboard()
    own = {"x-edge-dashboard": "1", "origin": dash.url.rstrip("/")}
    dash.ingest.ingest([msg(f"edge/{SIM}/status", b"online"),
                        msg(f"edge/{SIM}/state", named_state("kitchen 1", simulated=True)),
                        msg(f"edge/{SIM}/event/activation", activation("s1", True)),
                        msg(f"edge/{DEV}/status", b"offline"),
                        msg(f"edge/{DEV}/state", named_state("real one"))])
    assert dash.store.device(SIM)["simulated"] is True
    assert post(f"{dash.url}api/devices/remove", {"device": SIM}, own) == (
        409, {"error": f"device {SIM} is online; stop the simulator first"})
    dash.ingest.ingest([msg(f"edge/{SIM}/status", b"offline")])
    # guarded like the label API: its own page only, with the custom header
    assert post(f"{dash.url}api/devices/remove", {"device": SIM},
                {"origin": dash.url.rstrip("/")})[0] == 403
    assert post(f"{dash.url}api/devices/remove", {"device": SIM},
                {"x-edge-dashboard": "1", "origin": "http://attacker.example"})[0] == 403
    assert post(f"{dash.url}api/devices/remove", {"device": DEV}, own) == (
        409, {"error": f"device {DEV} is not simulated; only simulated devices can be removed"})
    assert post(f"{dash.url}api/devices/remove", {"device": "ffffffffffffffff"}, own)[0] == 404
    assert post(f"{dash.url}api/devices/remove", {"device": "../x"}, own)[0] == 400
    assert post(f"{dash.url}api/devices/remove", {"simulated": "all"}, own)[0] == 400
    assert post(f"{dash.url}api/devices/remove", {"device": SIM}, own) == (
        200, {"removed": [SIM]})
    assert [d["id"] for d in get(f"{dash.url}api/fleet")[1]["devices"]] == [DEV]
    assert get(f"{dash.url}api/devices/{SIM}/activations")[1] == []
    assert [c["device"] for c in get(f"{dash.url}api/chart")[1]["choices"]] == [DEV]
    # the broker's retained copies of it, replayed, do not bring it back ...
    dash.ingest.ingest([msg(f"edge/{SIM}/status", b"offline", retain=True),
                        msg(f"edge/{SIM}/state", named_state("kitchen 1", True, time.time()
                                                             - 5), retain=True)])
    assert dash.store.device(SIM) is None
    # ... but anything it says afterwards does
    dash.ingest.ingest([msg(f"edge/{SIM}/state", named_state("kitchen 1", True, time.time()
                                                             + 1), retain=True)])
    assert dash.store.device(SIM)["online"] is True


def test_removed_simulated_devices_stay_removed_when_the_dashboard_restarts(
        mqtt_broker: Any, tmp_path: Path) -> None:
    """Against a real Mosquitto: the simulator's retained status and state stay on the
    broker after it stops, and are replayed to the next dashboard."""
    broker = broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}")
    db = tmp_path / "fleet.sqlite3"
    dash = Dashboard(broker, db, port=free_port()).start()
    sim = FleetSimulator(broker, FleetProfile(devices=3, state_interval_s=1.0,
                                              activations_per_hour=3600.0), seed=4)
    try:
        sim.connect()
        sim.run(1.5)
    finally:
        sim.close()
    ids = sorted(d.id for d in sim.devices)
    names = {d.id: d.name for d in sim.devices}
    try:
        wait_for(lambda: dash.store.totals(time.time())["offline"] == 3, 10,
                 "three simulated devices offline")
        fleet = get(f"{dash.url}api/fleet")[1]["devices"]
        assert [(d["id"], d["name"], d["simulated"]) for d in fleet] == [
            (i, names[i], True) for i in ids]
        assert sorted(names.values()) == ["hallway 1", "kitchen 1", "living room 1"]
        status, body = post(f"{dash.url}api/devices/remove", {"simulated": "offline"},
                            {"x-edge-dashboard": "1", "origin": dash.url.rstrip("/")})
        assert status == 200 and sorted(body["removed"]) == ids
    finally:
        dash.stop()
    again = Dashboard(broker, db, port=free_port()).start()
    try:
        assert again.mqtt.wait_connected(10.0)
        wait_for(lambda: again.ingest.counters.received >= 6, 10,
                 "the broker's retained status and state of three devices")
        wait_for(lambda: again.ingest.idle.is_set(), 10, "the ingest to finish")
        assert again.store.devices() == [] and again.ingest.counters.skipped == 0
    finally:
        again.stop()


def test_offline_devices_age_out_of_the_live_view_and_keep_their_history(
        mqtt_broker: Any, tmp_path: Path) -> None:
    day = 86400.0
    clock = Clock(1.7e9)
    dash = Dashboard(broker_from_url(f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"),
                     tmp_path / "fleet.sqlite3", port=free_port(), offline_after_s=day,
                     clock=clock, sweep_s=0.05).start()
    t0 = clock.t
    try:
        dash.ingest.ingest([at(t0, f"edge/{DEV}/state", named_state("gone", t=t0)),
                            at(t0, f"edge/{DEV}/event/activation", activation("g1", True, t0)),
                            at(t0, f"edge/{DEV}/status", b"offline"),
                            at(t0, f"edge/{DEV_B}/status", b"online"),
                            at(t0, f"edge/{DEV_B}/state", named_state("stays", t=t0))])
        conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
        conn.request("GET", "/events")
        events = conn.getresponse()
        fleet = get(f"{dash.url}api/fleet")[1]
        assert [d["id"] for d in fleet["devices"]] == [DEV, DEV_B]
        assert fleet["offline_after_s"] == day
        clock.t = t0 + day + 1  # a day on: DEV (offline) ages out, DEV_B (online) stays

        def gone() -> Any:
            line = events.fp.readline()
            return line.startswith(b"data: ") and json.loads(line[6:]).get("gone")

        assert wait_for(gone, 10, "the page to be told DEV aged out", poll_s=0) == [DEV]
        conn.close()
        fleet = get(f"{dash.url}api/fleet")[1]
        assert [d["id"] for d in fleet["devices"]] == [DEV_B]
        assert (fleet["totals"]["devices"], fleet["totals"]["aged_out"]) == (1, 1)
        assert [a["id"] for a in get(f"{dash.url}api/devices/{DEV}/activations")[1]] == ["g1"]
        # the broker's retained copies, replayed on a reconnect, do not bring it back ...
        up = dash.ingest.ingest([at(clock.t, f"edge/{DEV}/status", b"offline", retain=True),
                                 at(clock.t, f"edge/{DEV}/state", named_state("gone", t=t0),
                                    retain=True)])
        assert "devices" not in up and dash.store.device(DEV, t0 + 1) is None
        assert up["totals"]["aged_out"] == 1
        # ... but the device speaking again does
        up = dash.ingest.ingest([at(clock.t, f"edge/{DEV}/status", b"online")])
        assert [d["id"] for d in up["devices"]] == [DEV]
        assert len(get(f"{dash.url}api/fleet")[1]["devices"]) == 2
    finally:
        dash.stop()


def test_aging_out_can_be_turned_off(ingestor: Ingestor) -> None:
    ingestor.clock = Clock(1.0)
    ingestor.ingest([at(1.0, f"edge/{DEV}/status", b"offline")])
    assert [d["id"] for d in ingestor.store.devices(None)] == [DEV]
    assert ingestor.store.devices(2.0) == []


def test_dashboard_cli_offline_after_is_checked_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-1", "nan", "9000"):
        assert cli(["dashboard", "--broker", "mqtt://localhost", "--offline-after", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--offline-after" in err and "give hours" in err
