"""The doctor's ``security`` check: every downgrade the owner accepted in ``[security]``.

A downgrade (plain MQTT to another machine, simulated pins or silent recording on a
device that uploads) is refused at load unless its opt-out is set; each opt-out in
force is shown here as a warning, in the words of its own config doc, so it is never
forgotten in a config file.

>>> from edge.config import Config, SecurityConfig
>>> [f.detail.split(":")[0] for f in check_opt_outs(Config(
...     security=SecurityConfig(allow_silent_recording=True)))]
['security.allow_silent_recording = true']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from edge.config import Config, SecurityConfig
from edge.service.findings import Finding, ok, warn


def opt_outs_in_force(security: SecurityConfig) -> list[tuple[str, str]]:
    """(key, what it allows) for each opt-out set to true, in the config's order."""
    return [(f"security.{f.name}", f.metadata.get("doc", ""))
            for f in dataclasses.fields(security) if getattr(security, f.name) is True]


def check_opt_outs(cfg: Config) -> Iterator[Finding]:
    found = opt_outs_in_force(cfg.security)
    if not found:
        yield ok("security", "no downgrade accepted: every [security] opt-out is off")
        return
    for key, allows in found:
        yield warn("security", f"{key} = true: the owner accepts this downgrade ({allows})",
                   f"remove {key} from the config once the downgrade is no longer needed")
