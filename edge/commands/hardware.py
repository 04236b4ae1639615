"""``edge hardware profiles|check``: the boards, and trying the configured parts."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hardware", help="list hardware profiles, or check the configured parts")
    hsub = p.add_subparsers(dest="hardware_command", metavar="ACTION")
    hsub.required = True
    pr = hsub.add_parser("profiles", help="the boards and their pins")
    pr.set_defaults(func=profiles)
    c = hsub.add_parser("check", help="open every configured part once, read the mute switch")
    c.add_argument("--config", type=Path, help="config file (TOML)")
    c.set_defaults(func=check)


def profiles(args: argparse.Namespace) -> int:
    from edge.hardware.profiles import PROFILES, describe

    print("\n\n".join(describe(p) for p in PROFILES.values()))
    return 0


def check(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.errors import HardwareError
    from edge.hardware.pins import hardware_error
    from edge.hardware.plugin import build_parts
    from edge.hardware.profiles import resolve
    from edge.pipeline.events import HardwareFault

    spec = resolve(load_checked_config(args.config).hardware)
    parts = build_parts(spec)
    try:
        switch = "none (hardware.mute_pin = 'none')"
        if parts.switch is not None and spec.mute is not None:
            try:
                switch = f"{spec.mute}, in the {'MUTE' if parts.switch.read() else 'listen'} " \
                         "position"
            except Exception as exc:
                err = hardware_error(spec.mute.key, spec.mute.text, exc)
                parts.faults.append(HardwareFault(spec.mute.key, f"{err} (cannot be read)"))
                switch = f"{spec.mute}, unreadable"
        elif spec.mute is not None:
            switch = f"{spec.mute} (failed)"
        failed = {f.key.split("[")[0] for f in parts.faults}

        def mark(*keys: str) -> str:
            return " (failed)" if failed & {f"hardware.{k}" for k in keys} else ""

        print(f"profile: {spec.profile.name}")
        print(f"mute switch: {switch}")
        print(f"indicator: {spec.leds}{mark('leds', 'led_pins', 'led_spi', 'led_power_pin')}")
        print(f"chimes: {spec.chime_backend if spec.chime else 'off'}"
              f"{mark('chime', 'chime_device', 'chime_pin', 'chime_backend')}")
        print(f"button: {spec.button or 'none'}{mark('button_pin')}")
    finally:
        parts.close()
    if parts.faults:
        for fault in parts.faults[1:]:
            print(f"edge: error: {fault.message}")
        raise HardwareError(parts.faults[0].message)
    print("hardware: ok")
    return 0
