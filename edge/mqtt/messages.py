"""The JSON of the device's messages, built and checked in one place.

The device publishes these, the fleet simulator publishes the very same, and the
dashboard checks what it receives against them (a broken message from another
publisher is logged and skipped, never stored).

``state`` (retained)::

    {"name": "kitchen pi", "simulated": false, "mode": "listening", "muted": false,
     "mute_causes": [], "recording": false,
     "models": {"hey_jarvis": {"threshold": 0.5}}, "version": "0.1.0", "uptime_s": 12.3,
     "rtf": 0.11, "last_activation": {"id": "...", "time": "...Z", "wall_time": 1.7e9,
     "model": "hey_jarvis", "score": 0.93}, "false_per_hour": 0.0, "error": null,
     "time": "2024-05-01T12:00:00.000Z", "wall_time": 1714564800.0}

``event/activation`` (QoS 1, metadata only: never audio)::

    {"event_type": "activation", "id": "...", "time": "...Z", "wall_time": 1.7e9,
     "model": "hey_jarvis", "score": 0.93, "threshold": 0.5, "reason": "silence",
     "duration_s": 3.4, "likely_false": false, "kept": true}

Every ``score`` of an activation (here and in ``last_activation``) is its peak score:
the highest over the whole run of frames over the threshold that triggered it, the
number ``edge log`` shows as ``peak``, the sidecar as ``score`` and replay as ``peak``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edge.clock import iso
from edge.config.rules import name_refusal

MODES = ("listening", "recording", "muted", "error")
STATUS = ("online", "offline")
EVENT_TYPE = "activation"
"""Home Assistant's event entity needs an ``event_type`` in each event."""
MAX_MESSAGE_BYTES = 64 * 1024
"""Beyond this a message on ``<base>/+/#`` is not ours."""


class BadMessage(ValueError):
    """A message that does not have the shape of ours."""


def state_message(*, mode: str, mute_causes: list[str], models: dict[str, float],
                  version: str, uptime_s: float, rtf: float | None,
                  last_activation: dict[str, Any] | None, false_per_hour: float,
                  wall_time: float, error: str | None = None, name: str = "",
                  simulated: bool = False) -> dict[str, Any]:
    """``name``: the device's friendly name (``mqtt.name``; '' sends null); ``simulated``:
    true only from ``edge simulate-fleet``, so a dashboard can tell its devices apart."""
    return {
        "name": name or None,
        "simulated": bool(simulated),
        "mode": mode,
        "muted": mode == "muted",
        "mute_causes": list(mute_causes),
        "recording": mode == "recording",
        "models": {m: {"threshold": round(float(t), 4)} for m, t in sorted(models.items())},
        "version": version,
        "uptime_s": round(uptime_s, 1),
        "rtf": None if rtf is None else round(rtf, 4),
        "last_activation": last_activation,
        "false_per_hour": round(false_per_hour, 3),
        "error": error,
        "time": iso(wall_time),
        "wall_time": round(wall_time, 3),
    }


def activation_message(*, activation_id: str, wall_time: float, model: str, score: float,
                       threshold: float, reason: str, duration_s: float, likely_false: bool,
                       kept: bool) -> dict[str, Any]:
    """``score``: the activation's peak (``ActivationEnded.peak``, 6 decimals as the log's)."""
    return {
        "event_type": EVENT_TYPE,
        "id": activation_id,
        "time": iso(wall_time),
        "wall_time": round(wall_time, 3),
        "model": model,
        "score": round(float(score), 6),
        "threshold": round(float(threshold), 4),
        "reason": reason,
        "duration_s": round(float(duration_s), 3),
        "likely_false": bool(likely_false),
        "kept": bool(kept),
    }


def transcript_message(*, activation_id: str, wall_time: float, model: str, seconds: float,
                       text: str) -> dict[str, Any]:
    """``event/transcript``: what the speech-to-text server heard after activation
    ``activation_id`` (sent only with ``assist.stt.publish_transcripts``)."""
    return {
        "event_type": "transcript",
        "id": activation_id,
        "time": iso(wall_time),
        "wall_time": round(wall_time, 3),
        "model": model,
        "seconds": round(float(seconds), 3),
        "text": text,
    }


def encode(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# ---- checking what arrives (the dashboard) ------------------------------------------------


def decode_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"{len(payload)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"a JSON {type(obj).__name__}, not an object")
    return obj


MAX_EXACT_INT = 2**53
"""The largest whole number a message may hold: beyond it a float is no longer exact."""


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
          optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise BadMessage(f"no {key!r}")
    v = obj[key]
    if isinstance(v, bool) and kind in (int, float, (int, float)):
        raise BadMessage(f"{key!r} is not a number")
    if not isinstance(v, kind):
        raise BadMessage(f"{key!r} has the wrong type ({type(v).__name__})")
    if isinstance(v, float) and not math.isfinite(v):
        raise BadMessage(f"{key!r} is not finite")
    if isinstance(v, int) and not -MAX_EXACT_INT <= v <= MAX_EXACT_INT:
        raise BadMessage(f"{key!r} is out of range")  # a float or SQLite could not hold it
    if isinstance(v, str) and len(v) > 200:
        raise BadMessage(f"{key!r} is too long")
    return v


def check_state(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields the dashboard keeps of a state message; BadMessage if it is not one."""
    mode = _need(obj, "mode", str)
    if mode not in MODES:
        raise BadMessage(f"mode {mode!r} is not one of {', '.join(MODES)}")
    models = _need(obj, "models", dict)
    thresholds = {}
    for name, m in list(models.items())[:16]:
        if not isinstance(m, dict):
            raise BadMessage(f"model {name!r} is not an object")
        thresholds[str(name)[:64]] = float(_need(m, "threshold", (int, float)))
    last = _need(obj, "last_activation", dict, optional=True)
    causes = _need(obj, "mute_causes", list, optional=True) or []
    friendly = _need(obj, "name", str, optional=True) or ""
    why = name_refusal(friendly, "'name'")
    if why is not None:
        raise BadMessage(why)
    return {
        "name": friendly,
        "simulated": _need(obj, "simulated", bool, optional=True) is True,
        "mode": mode,
        "mute_causes": [str(c)[:16] for c in causes[:4]],
        "models": thresholds,
        "version": str(_need(obj, "version", str)),
        "uptime_s": float(_need(obj, "uptime_s", (int, float))),
        "rtf": _need(obj, "rtf", (int, float), optional=True),
        "false_per_hour": float(_need(obj, "false_per_hour", (int, float))),
        "error": _need(obj, "error", str, optional=True),
        "last_activation": None if last is None else {
            "id": str(_need(last, "id", str)), "wall_time": float(_need(last, "wall_time",
                                                                          (int, float))),
            "score": float(_need(last, "score", (int, float)))},
        "wall_time": float(_need(obj, "wall_time", (int, float))),
    }


def check_activation(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of an activation event; BadMessage if it is not one."""
    aid = _need(obj, "id", str)
    if not aid or len(aid) > 64:
        raise BadMessage("'id' must be 1 to 64 characters")
    return {
        "id": aid,
        "wall_time": float(_need(obj, "wall_time", (int, float))),
        "model": _need(obj, "model", str),
        "score": float(_need(obj, "score", (int, float))),
        "threshold": float(_need(obj, "threshold", (int, float))),
        "reason": _need(obj, "reason", str),
        "duration_s": float(_need(obj, "duration_s", (int, float))),
        "likely_false": bool(_need(obj, "likely_false", bool)),
        "kept": bool(_need(obj, "kept", bool)),
    }


def check_status(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace").strip()
    if text not in STATUS:
        raise BadMessage(f"status {text[:20]!r} is neither online nor offline")
    return text
