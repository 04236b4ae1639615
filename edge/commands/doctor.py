"""``edge doctor``: check the microphone, models, mute switch, LEDs, broker, the voice
assistant's API, disk, clock and CPU, and list the downgrades the owner accepted
(``[security]``).

Exit status 0 when nothing failed (warnings allowed), 1 when something did; each
failure is printed with its fix. ``--json`` prints one object per check instead.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

SYSTEM_CONFIG = Path("/etc/edge-recorder/config.toml")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from edge.service.doctor import CHECKS

    p = sub.add_parser("doctor", help="check the device, explain each problem and its fix")
    p.add_argument("--config", type=Path,
                   help=f"config file (default: {SYSTEM_CONFIG} when it exists)")
    p.add_argument("--only", action="append", choices=CHECKS, metavar="CHECK",
                   help=f"run only this check (repeatable): {', '.join(CHECKS)}")
    p.add_argument("--skip", action="append", choices=CHECKS, metavar="CHECK", default=[],
                   help="skip this check (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per check")
    p.add_argument("--cpu-seconds", type=float, default=5.0, metavar="S",
                   help="seconds of audio the CPU headroom is measured over (default 5)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.errors import ConfigError, UsageError
    from edge.service.doctor import CHECKS, Doctor
    from edge.service.findings import Status, fail, ok, render

    if args.cpu_seconds <= 0 or args.cpu_seconds > 600:
        raise UsageError(f"--cpu-seconds {args.cpu_seconds:g} is out of range; give 1 to 600")
    path = args.config
    if path is None and SYSTEM_CONFIG.exists():
        path = SYSTEM_CONFIG
    try:
        cfg = load_checked_config(path)
    except ConfigError as exc:
        findings = [fail("config", str(exc), f"fix {path}, then `edge config check {path}`")]
    else:
        checks = [c for c in (args.only or CHECKS) if c not in args.skip]
        findings = [ok("config", f"{path} is valid" if path else
                       "no config file given: the defaults are used")]
        findings += Doctor(cfg, cpu_s=args.cpu_seconds).run(checks)
    if args.json:
        for f in findings:
            print(json.dumps({**asdict(f), "status": str(f.status)}))
    else:
        print(render(findings), end="")
    return 1 if any(f.status is Status.FAIL for f in findings) else 0
