"""The way out: the durable outbox queue, the uploader thread, the MQTT and HTTPS senders, and the
plugin that runs them."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "queue": ("Outbox",),
    "uploader": ("Uploader", "Sender"),
    "plugin": ("UploadPlugin", "build_sender"),
    "destinations": ("https_destination", "mqtt_destination"),
})
