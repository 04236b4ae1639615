"""How an activation's end is judged: likely false, and counted as a false activation.

Written once for everyone who judges: the recorder flags an activation when it ends,
and the activation log, its statistics (``edge stats``), the MQTT state message and
the fleet dashboard count false activations by the same rule, in Python or in SQL.

>>> counts_as_false("unknown", likely_false=True), counts_as_false("true", True)
(True, False)
"""

from __future__ import annotations

LIKELY_FALSE = ("no_speech", "aborted_by_mute", "cancelled_by_user")
"""End reasons that flag an activation likely-false: nobody spoke after the wake, or the
person stopped it (the mute switch, the cancel button)."""

FALSE = "false"
"""The label a person gives an accidental wake."""
UNLABELLED = "unknown"
"""The label of an activation nobody has labelled yet."""


def counts_as_false(label: str, likely_false: bool) -> bool:
    """A false activation: labelled false, or flagged likely-false and not labelled either
    way (a person's label overrides the flag)."""
    return label == FALSE or (label == UNLABELLED and bool(likely_false))


FALSE_SQL = f"(label = '{FALSE}' OR (label = '{UNLABELLED}' AND likely_false = 1))"
"""``counts_as_false`` as an SQL expression over the columns ``label`` and ``likely_false``
(an integer 0 or 1), for the activation log and the dashboard's history."""
