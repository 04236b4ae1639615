"""The one validation step after loading: rules that join several keys of the config.

Each key was already checked on its own (type, range, choices) when the TOML was
built into dataclasses; here come the rules one key's range cannot express. Only
config values are needed. Checks that need a subsystem's knowledge (a hardware
profile's pins, a public key's bytes) run at composition: ``edge.compose.config``.
A downgrade (a broker link without TLS to another machine) is refused unless the
owner opts out in ``[security]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from edge.config.rules import check_topic_levels, is_loopback, name_refusal
from edge.config.schema import Config, MqttConfig, UploadConfig
from edge.errors import ConfigError


def validate(cfg: Config) -> None:
    """Raise ConfigError, naming the keys at fault, for the first cross-key rule broken."""
    check_upload(cfg.upload)
    check_mqtt(cfg.mqtt)
    check_no_nul(cfg, "")
    check_plaintext(cfg)
    check_stt(cfg)


def check_stt(cfg: Config) -> None:
    """``assist.mode = 'stt'`` needs the server's URL: https://, or http:// to this machine."""
    stt = cfg.assist.stt
    if cfg.assist.mode == "stt" and not stt.url:
        raise ConfigError("assist.mode = 'stt' needs assist.stt.url, the speech-to-text "
                          "server's base URL, e.g. 'http://127.0.0.1:8000'")
    check_client_cert("assist.stt", stt.key, stt.cert)
    if stt.url:
        check_https_url(stt.url, "assist.stt.url", "assist.stt.api_key_file", "utterances")


def check_plaintext(cfg: Config) -> None:
    """A broker link without TLS leaves the machine only when ``[security]`` says so."""
    links = ((cfg.mqtt.enabled, cfg.mqtt, "mqtt", "allow_plaintext_mqtt"),
             (cfg.upload.mode == "mqtt", cfg.upload.mqtt, "upload.mqtt",
              "allow_plaintext_upload"))
    for used, broker, section, opt_out in links:
        if used and not broker.tls and not is_loopback(broker.host) \
                and not getattr(cfg.security, opt_out):
            raise ConfigError(f"{section}.tls = false to {broker.host!r}, another machine, is "
                              f"refused: set {section}.tls = true (port 8883), or accept the "
                              f"plain link with security.{opt_out} = true")


def check_upload(u: UploadConfig) -> None:
    if u.retry_min_s > u.retry_max_s:
        raise ConfigError(f"upload.retry_min_s = {u.retry_min_s} is larger than upload.retry_max_s"
                          f" = {u.retry_max_s}; the first wait must not exceed the longest")
    if u.mode == "mqtt" and not u.mqtt.host:
        raise ConfigError("upload.mode = 'mqtt' needs upload.mqtt.host, the broker's host name "
                          "or address")
    check_client_cert("upload.mqtt", u.mqtt.key, u.mqtt.cert)
    check_client_cert("upload.https", u.https.key, u.https.cert)
    check_topic_levels(u.mqtt.topic_prefix, "upload.mqtt.topic_prefix", "edge-recorder")
    if u.mode == "https" and not u.https.url:
        raise ConfigError("upload.mode = 'https' needs upload.https.url, e.g. "
                          "'https://collector.example/clips'")
    if u.https.url:
        check_https_url(u.https.url)


def check_mqtt(m: MqttConfig) -> None:
    if m.enabled and not m.host:
        raise ConfigError("mqtt.enabled = true needs mqtt.host, the broker's host name or "
                          "address")
    check_client_cert("mqtt", m.key, m.cert)
    check_topic_levels(m.base_topic, "mqtt.base_topic")
    check_topic_levels(m.discovery_prefix, "mqtt.discovery_prefix")
    why = name_refusal(m.name, "mqtt.name")
    if why is not None:
        raise ConfigError(why)
    if m.threshold_min > m.threshold_max:
        raise ConfigError(f"mqtt.threshold_min = {m.threshold_min} is larger than "
                          f"mqtt.threshold_max = {m.threshold_max}")


def check_no_nul(section: object, prefix: str) -> None:
    """One rule for every path, host and name in the config: no NUL character (no system
    call takes one, so ``edge run`` would fail on it after ``config check`` passed)."""
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_no_nul(value, f"{key}.")
            continue
        texts = (value if isinstance(value, tuple) else
                 [*value, *value.values()] if isinstance(value, Mapping) else [value])
        if any(isinstance(t, str) and "\0" in t for t in texts):
            raise ConfigError(f"config key {key} holds a NUL character (\\0), which no path, "
                              "host or name may contain; remove it")


def check_client_cert(section: str, key: str, cert: str) -> None:
    """A private key is only used with its certificate (mutual TLS)."""
    if key and not cert:
        raise ConfigError(f"{section}.key is set but {section}.cert is not; give the client "
                          "certificate too, or neither")


def check_https_url(url: str, key: str = "upload.https.url",
                    secret_key: str = "upload.https.token_file", what: str = "clips") -> None:
    """An https:// URL with a host and no credentials; plain http only to this machine
    (``key``: the config key, named in the refusal)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 address
        hostname = None
    if not hostname or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{key} = {url!r} is not an https:// URL with a host")
    if parts.username or parts.password:
        raise ConfigError(f"{key} holds credentials; put the token in {secret_key} instead (a "
                          "URL ends up in logs)")
    if parts.scheme == "http" and not is_loopback(hostname):
        raise ConfigError(f"{key} = {url!r} is plain http to another machine; {what} may only "
                          "leave the device over https://")
