"""Ctrl-C in training is held to the next step boundary (gluon_fashion/engine/interrupt.py)."""
import os
import signal

import pytest

from gluon_fashion.engine.interrupt import StepBoundaryInterrupt


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler, even where the suite was started with SIGINT ignored (a background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs in this (main) thread before kill returns to Python


def test_first_ctrl_c_in_a_step_waits_for_the_boundary_a_second_one_does_not():
    with StepBoundaryInterrupt() as interrupt:
        with interrupt.deferred():
            _ctrl_c()
            finished_step = True  # still running: the step is not cut in the middle
        assert finished_step and interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    with StepBoundaryInterrupt() as interrupt:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred():
                _ctrl_c()
                _ctrl_c()  # the second one: at once


def test_ctrl_c_outside_steps_stops_at_once_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with StepBoundaryInterrupt() as interrupt:
        assert signal.getsignal(signal.SIGINT) is not before
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()  # e.g. during validation
        interrupt.check()  # nothing pending
    assert signal.getsignal(signal.SIGINT) is before


def test_a_replaced_sigint_handler_is_left_alone():
    own = []
    previous = signal.signal(signal.SIGINT, lambda *a: own.append(1))
    try:
        with StepBoundaryInterrupt() as interrupt, interrupt.deferred():
            _ctrl_c()
        assert own == [1] and not interrupt.requested
    finally:
        signal.signal(signal.SIGINT, previous)
