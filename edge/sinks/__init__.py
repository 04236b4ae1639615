"""Where finished clips go: the dispatcher thread, the local directory, the outbox (uploads) and
discarding."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "base": ("ClipSink",),
    "dispatch": ("ClipDispatcher",),
    "local": ("LocalDirSink",),
    "outbox": ("OutboxSink", "DiscardSink"),
})
