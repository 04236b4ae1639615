"""The [upload] config: defaults that keep audio on the device, and clear errors."""

from __future__ import annotations

import pytest

from edge.config import load_config
from edge.errors import ConfigError


def cfg_from(tmp_path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


def test_default_is_off():
    assert load_config(None).upload.mode == "off"


def test_a_full_mqtt_section_loads(tmp_path):
    cfg = cfg_from(tmp_path, """
[upload]
mode = "mqtt"
outbox_max_mb = 50
outbox_max_clips = 100
retention_days = 7
[upload.mqtt]
host = "broker.lan"
port = 8883
ca = "/etc/edge/ca.pem"
username = "pi"
password_file = "/etc/edge/mqtt-password"
protocol = "3.1.1"
""")
    assert cfg.upload.mqtt.host == "broker.lan" and cfg.upload.mqtt.protocol == "3.1.1"
    assert cfg.upload.outbox_max_clips == 100


@pytest.mark.parametrize(("text", "message"), [
    ('[upload]\nmode = "mqtt"\n', "needs upload.mqtt.host"),
    ('[upload]\nmode = "https"\n', "needs upload.https.url"),
    ('[upload]\nmode = "ftp"\n', "upload.mode = 'ftp' is not allowed"),
    ('[upload.https]\nurl = "http://collector.example/clips"\n', "plain http"),
    ('[upload.https]\nurl = "https://user:pw@collector.example/clips"\n',
     "upload.https.token_file"),
    ('[upload.mqtt]\nkey = "k.pem"\n', "upload.mqtt.cert is not"),
    ('[upload.mqtt]\ntopic_prefix = "edge/#"\n', "topic_prefix"),
    ('[upload]\nretry_min_s = 10\nretry_max_s = 5\n', "retry_min_s"),
    ('[upload]\noutbox_max_clips = 0\n', "upload.outbox_max_clips = 0"),
])
def test_bad_upload_config_is_refused_with_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        cfg_from(tmp_path, text)


def test_plain_http_is_allowed_to_loopback_only(tmp_path):
    cfg = cfg_from(tmp_path, '[upload.https]\nurl = "http://127.0.0.1:8080/clips"\n')
    assert cfg.upload.https.url.startswith("http://127.0.0.1")
