"""The tests' one wait helper: what it returns, and what it says when it gives up."""

from __future__ import annotations

import threading

import pytest

from tests.waiting import wait_for


def test_returns_the_first_truthy_value_of_the_condition():
    seen = iter([None, [], ["clip"]])
    assert wait_for(lambda: next(seen), 5, "a clip") == ["clip"]


def test_gives_up_naming_what_it_waited_for_and_how_long():
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for the outbox"):
        wait_for(lambda: False, 0.05, "the outbox")


def test_with_a_condition_variable_it_checks_again_when_notified():
    cond = threading.Condition()
    box: list[str] = []

    def put() -> None:
        with cond:
            box.append("message")
            cond.notify_all()

    timer = threading.Timer(0.05, put)
    timer.start()
    try:
        assert wait_for(lambda: list(box), 5, "a message", notified=cond) == ["message"]
    finally:
        timer.join()
