"""``edge dashboard --broker URL``: the live fleet page for field testers.

It follows ``<base>/+/#`` on the broker, keeps the fleet's history in SQLite, and
serves a page on 127.0.0.1:8080 (another --host needs --password-file; a name the page
is opened by other than localhost and the --host address needs --allow-host). Needs the
optional extra: ``.venv/bin/pip install -e '.[dashboard]'`` in the checkout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.mqtt.topics import BrokerSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="the live fleet dashboard (web page) over MQTT")
    add_broker_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                       "127.0.0.1; others need a password)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name (or IP address) the page may be opened by; "
                        "repeat for more. Only localhost, 127.0.0.1, [::1], the --host "
                        "address and these are answered (against DNS rebinding)")
    p.add_argument("--password-file", type=Path, help="file holding the page's password "
                                                      "(HTTP Basic, any user name)")
    p.add_argument("--db", type=Path, help="history database (default: dashboard.sqlite3 "
                                           "in the state directory)")
    p.add_argument("--offline-after", type=float, default=24.0, metavar="HOURS",
                   help="hide a device from the live page once it has been offline this "
                        "long (default 24; 0: never). Its history stays, and it is back "
                        "as soon as it speaks")
    p.set_defaults(func=main)


def add_broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    p.add_argument("--broker-ca", default="", metavar="PEM", help="CA of the broker's "
                                                                  "certificate (mqtts)")
    p.add_argument("--broker-username", default="", metavar="NAME",
                   help="user name on the broker (default: none)")
    p.add_argument("--broker-password-file", default="", metavar="FILE",
                   help="file holding the broker password (first line)")
    p.add_argument("--base", default="edge", help="the devices' mqtt.base_topic (default edge)")


def broker(args: argparse.Namespace) -> BrokerSettings:
    from edge.config.rules import check_topic_levels
    from edge.mqtt.topics import broker_from_url

    check_topic_levels(args.base, "--base")
    return broker_from_url(args.broker, ca=args.broker_ca, username=args.broker_username,
                           password_file=args.broker_password_file)


def main(args: argparse.Namespace) -> int:
    from edge.config import Config
    from edge.errors import UsageError
    from edge.privacy.secrets import read_secret

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port; give 1 to 65535")
    if not 0 <= args.offline_after <= 24 * 365:  # NaN too
        raise UsageError(f"--offline-after {args.offline_after:g} is out of range; give "
                         "hours from 0 (never hide) to 8760")
    from edge.dashboard.guards import allowed_hosts

    allowed_hosts(args.host, args.allow_host)  # a bad --allow-host, before anything starts
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("the dashboard needs starlette and uvicorn (the dashboard extra); "
                         "in the checkout run: .venv/bin/pip install -e '.[dashboard]'") from None
    from edge.dashboard.app import Dashboard

    password = ""
    if args.password_file is not None:
        password = read_secret(str(args.password_file), "--password-file")
        if not password:
            raise UsageError(f"--password-file {args.password_file} is empty; put the "
                             "password on its first line")
    check_port_free(args.host, args.port)
    db = args.db or Config().state_path / "dashboard.sqlite3"
    dash = Dashboard(broker(args), db, args.host, args.port, password, args.base,
                     args.allow_host, offline_after_s=args.offline_after * 3600.0)
    print(f"edge dashboard: {dash.url} (history in {db})", flush=True)
    dash.run()
    return 0


def check_port_free(host: str, port: int) -> None:
    """A one-line error for a busy or unusable address, before the web server starts."""
    import socket

    from edge.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"--host {host!r} cannot be used ({exc}); give an address such as "
                         "127.0.0.1") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); another "
                             "program may be using it: give another --port") from None
