"""``edge devices``: list capture devices with their channels and rates."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list capture devices")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.audio.portaudio import list_devices

    devices = list_devices()
    if not devices:
        print("no capture devices found")
        return 1
    print(f"{'index':>5}  {'channels':>8}  {'rate':>7}  name")
    for d in devices:
        print(f"{d.index:>5}  {d.channels:>8}  {d.default_rate:>7}  {d.name}")
    return 0
