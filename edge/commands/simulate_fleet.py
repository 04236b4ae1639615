"""``edge simulate-fleet --broker URL --devices N``: simulated devices for the dashboard.

Each device has its own MQTT connection and publishes the real message formats:
status (with the last will), a retained state every --state-interval seconds, and
activation events at --activations-per-hour, with optional bursts. Each has a friendly
name ("kitchen 1", ...) and says ``"simulated": true`` in its state, so the dashboard
marks it and lets the tester remove it.
"""

from __future__ import annotations

import argparse

from edge.commands.dashboard import add_broker_options, broker


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate-fleet", help="simulated devices publishing to a broker "
                                              "(for the dashboard and its benchmark)")
    add_broker_options(p)
    p.add_argument("--devices", type=int, default=100, help="how many (default 100)")
    p.add_argument("--duration", type=float, default=3600.0, metavar="S",
                   help="seconds to run (default 3600)")
    p.add_argument("--state-interval", type=float, default=60.0, metavar="S",
                   help="seconds between state messages per device (default 60)")
    p.add_argument("--activations-per-hour", type=float, default=1.0, metavar="N",
                   help="per device (default 1)")
    p.add_argument("--false-fraction", type=float, default=0.3, metavar="F",
                   help="share of wakes that are likely false (default 0.3)")
    p.add_argument("--burst-every", type=float, default=0.0, metavar="S",
                   help="every S seconds a share of the fleet wakes at once (0: never)")
    p.add_argument("--burst-fraction", type=float, default=0.2, metavar="F",
                   help="share of the fleet that wakes in each burst (default 0.2)")
    p.add_argument("--backfill-hours", type=float, default=0.0, metavar="H",
                   help="at start, report H past hours of activations (fills the history)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed gives the same device ids and names "
                        "(default 0)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.dashboard.simulator import FleetProfile, FleetSimulator
    from edge.errors import UsageError

    checks = [(1 <= args.devices <= 20000, "--devices must be 1 to 20000"),
              (args.duration > 0, "--duration must be more than 0"),
              (args.state_interval >= 0.05, "--state-interval must be at least 0.05 s"),
              (args.activations_per_hour >= 0, "--activations-per-hour must be 0 or more"),
              (0 <= args.false_fraction <= 1, "--false-fraction must be 0 to 1"),
              (args.burst_every >= 0, "--burst-every must be 0 or more"),
              (0 < args.burst_fraction <= 1, "--burst-fraction must be more than 0, up to 1"),
              (0 <= args.backfill_hours <= 24 * 14, "--backfill-hours must be 0 to 336")]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    profile = FleetProfile(args.devices, args.state_interval, args.activations_per_hour,
                           args.false_fraction, args.burst_every, args.burst_fraction,
                           backfill_hours=args.backfill_hours)
    sim = FleetSimulator(broker(args), profile, args.base, args.seed)
    sim.connect()
    print(f"{args.devices} simulated devices online ({sim.counters.total} messages so far); "
          f"publishing for {args.duration:g} s", flush=True)
    try:
        c = sim.run(args.duration)
    except KeyboardInterrupt:
        c = sim.counters
    finally:
        sim.close()
    print(f"published {c.total} messages: {c.state} state, {c.activations} activations, "
          f"{c.status} status, {c.results} command results")
    return 0
