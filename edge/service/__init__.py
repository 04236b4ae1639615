"""Running as a service: systemd notify and watchdog, journald logging, the log lines of what
the daemon does, the wall-clock watch and `edge doctor`."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "systemd": ("SystemdPlugin", "Notifier", "Watchdog"),
    "logs": ("configure", "fields"),
    "activity": ("ActivityLog",),
    "clockwatch": ("ClockWatch",),
    "doctor": ("Doctor",),
})
