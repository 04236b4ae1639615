"""The tests' one way to wait for another thread or process: check a condition until it
holds, or fail at a deadline saying what never happened.

>>> wait_for(lambda: outbox.count() == 0, 20, "the outbox to empty")
True
>>> [msg] = wait_for(lambda: col.messages[:1], what="the first clip")  # the truthy value

Waiting is never a timing assertion: the timeout only bounds how long a broken test
hangs, so it is generous.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 30.0, what: str = "the condition", *,
             poll_s: float = 0.01, notified: threading.Condition | None = None) -> T:
    """The first truthy value of ``cond()``, checked every ``poll_s`` seconds.

    With ``notified``, ``cond`` is checked under that condition variable's lock, again
    each time it is notified, instead of polling. Raises AssertionError naming ``what``
    and the timeout when ``cond()`` is still falsy at the deadline.
    """
    deadline = time.monotonic() + timeout
    with notified if notified is not None else contextlib.nullcontext():
        while True:
            value = cond()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            if notified is not None:
                notified.wait(left)
            else:
                time.sleep(min(poll_s, left))
