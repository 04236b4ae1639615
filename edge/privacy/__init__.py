"""The owner's control: sealing at rest, the ledger of what left, the pseudonymous id, where audio
lives under the state directory, retention and purge."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "crypto": ("Sealer", "sealer_for", "new_keypair", "open_sealed"),
    "bundle": ("pack", "unpack"),
    "ledger": ("Ledger", "read_ledger"),
    "identity": ("device_id", "rotate"),
    "places": ("audio_places", "outbox_dir", "ledger_path", "lock_path"),
    "retention": ("expire", "purge", "purge_places", "Removed"),
})
