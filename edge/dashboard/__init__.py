"""The fleet dashboard (``edge dashboard``): an optional extra, never imported by the daemon.

It subscribes to ``<base>/+/#``, keeps the fleet's history in SQLite, and serves a
live page (Starlette + uvicorn, updates over Server-Sent Events). Install it with
``.venv/bin/pip install -e '.[dashboard]'`` in the checkout.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "app": ("Dashboard",),
    "store": ("FleetStore",),
})
