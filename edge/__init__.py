"""edge-recorder: a privacy-first wake-word edge recorder for the Raspberry Pi."""

__version__ = "0.1.0"
