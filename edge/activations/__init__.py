"""The activation log: every wake recorded, false wakes flagged, labelled and counted; its store,
the daemon's plugin and the statistics."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "store": ("ActivationLog", "ActivationRow", "ActivationLogError", "db_path", "parse_since"),
    "plugin": ("ActivationLogPlugin",),
    "stats": ("compute", "render"),
})
