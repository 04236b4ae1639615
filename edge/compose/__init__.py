"""The composition root: every object built from the config, in one place.

- ``config``: the checks of a config that need the subsystems' knowledge, run before
  anything is built (``load_checked_config``: what every command reads a config with);
- ``preflight``: every check ``edge run`` makes before capture (models, key files,
  devices), the one function ``edge config check`` runs too;
- ``daemon``: the live daemon and every subsystem, each given its collaborators.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "daemon": ("build_device", "build_recorder", "Seams", "Device"),
    "config": ("check_config", "load_checked_config"),
    "preflight": ("preflight", "Checked", "open_input", "check_devices"),
})
