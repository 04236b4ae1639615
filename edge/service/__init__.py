"""Running as a service: systemd notify and watchdog, journald logging, the wall-clock watch and
`edge doctor`."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "systemd": ("SystemdPlugin", "Notifier", "Watchdog"),
    "logs": ("configure", "fields"),
    "clockwatch": ("ClockWatch",),
    "doctor": ("Doctor",),
})
