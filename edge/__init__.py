"""edge-recorder: a privacy-first wake-word edge recorder for the Raspberry Pi.

The packages follow the data flow, outside in: ``audio`` (sources, frames, the ring
buffer) feeds ``wake`` (engine, policy, VAD), which feeds ``pipeline`` (the recorder
state machine and the audio loop that owns it). Clips go to ``sinks``; ``upload``,
``activations``, ``hardware``, ``mqtt`` and ``service`` observe and act through events and
the audio loop's command queue; ``compose`` builds all of it from ``config``; ``commands``
is the command line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, surface: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package whose public names live in
    its modules (``{module: names}``), each module imported on first use: importing
    ``edge.audio`` must not load PortAudio on a device that reads a file.

    >>> getattr_, dir_, all_ = lazy_exports("edge.audio", {"frames": ("FRAME_S",)})
    >>> getattr_("FRAME_S"), all_
    (0.08, ['FRAME_S'])
    """
    where = {name: f"{package}.{module}" for module, names in surface.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
