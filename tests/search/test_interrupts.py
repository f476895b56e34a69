"""`signals.Interrupts`: a search's signals held by the object its caller owns, not module state:
the first signal unwinds training at once, waits for a store write to finish, and is forgotten
with the object; the handlers a Python caller had come back."""

from __future__ import annotations

import os
import signal

import pytest

from exptrack.search.signals import Interrupted, Interrupts


def test_a_signal_unwinds_training_at_once_and_a_store_write_at_the_next_check() -> None:
    said: list[str] = []
    interrupts = Interrupts(said.append, work="the run")
    with interrupts.for_the_call():
        with pytest.raises(Interrupted) as raised, interrupts.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
        assert raised.value.exit_code == 143
    assert said == ["SIGTERM: closing the run as failed (send again to exit at once)"]

    writing = Interrupts(said.append)
    with writing.for_the_call():
        os.kill(os.getpid(), signal.SIGINT)  # outside interruptible(): the write goes on
        with pytest.raises(Interrupted) as raised:
            writing.check()
    assert raised.value.exit_code == 130 and said[-1].startswith("SIGINT: closing the running trial")


def test_each_search_starts_with_nothing_received_and_the_callers_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    first = Interrupts(lambda _: None)
    with first.for_the_call():
        os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert first.requested == signal.SIGINT
    Interrupts().check()  # the next search's object: nothing received, nothing raised
