"""``Recent``: a list that keeps only its last entries, for the records long-lived objects
keep of what they did (the looks shown, the chimes played, the backoff delays, the clock
jumps). Tests and the doctor read them; a device that runs for years must not keep them all.

>>> r = Recent(4)
>>> for i in range(10):
...     r.append(i)
>>> r, r[-1:], len(r) <= 4
([6, 7, 8, 9], [9], True)
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

KEEP = 256
"""Entries kept by default: more than any test or report reads, a few kB at most."""


class Recent(list[T]):
    """A list (it compares, slices and iterates as one) that, when an ``append`` takes it
    past ``keep`` entries, drops its older half: bounded, and O(1) per append on average."""

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__()
        if keep < 2:
            raise ValueError(f"Recent keeps at least 2 entries, not {keep}")
        self.keep = keep

    def append(self, item: T) -> None:
        super().append(item)
        if len(self) > self.keep:
            del self[: len(self) - self.keep // 2]
