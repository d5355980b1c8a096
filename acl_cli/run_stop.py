"""When a training run stops early and cleanly: a signal (SIGINT, SIGTERM) or a step budget asks it to stop
after the current step, and the run writes ``last.pt`` before it ends."""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from . import distributed, interrupts

STOP_SYNC_STEPS = 10  # under torchrun, how often the processes agree whether a signal asks them to stop


class StopRequest:
    """What asks the loop to stop: the name of a signal received (set by :func:`stop_on_signals`'s handler)
    or this call's step budget."""

    def __init__(self, budget: int | None = None):
        self.signal: str | None = None
        self.budget = budget  # steps this call may take; None: no budget

    def reason(self, step: int, steps_this_call: int, env: distributed.DistEnv, device: torch.device) -> str | None:
        """Why to stop after ``step`` (a signal, the step budget), or None."""
        signalled = bool(self.signal)
        if env.enabled:  # processes agree every few steps: a per-step all-reduce + host sync stalls the GPU
            signalled = step % STOP_SYNC_STEPS == 0 and env.any(signalled, device)
        if signalled:
            return self.signal or "a signal to another process"
        if self.budget is not None and steps_this_call >= self.budget:
            return f"step budget of {self.budget}"
        return None


@contextmanager
def stop_on_signals(budget: int | None = None) -> Iterator[StopRequest]:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second Ctrl-C stops at once."""
    stop = StopRequest(budget)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    if interrupts.received():  # a Ctrl-C at start-up that something swallowed: stop before anything is written
        raise KeyboardInterrupt

    def handler(signum, frame):
        if stop.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signal = signal.Signals(signum).name
        again = " (Ctrl-C again to quit at once)" if signum == signal.SIGINT else ""
        print(f"\n{stop.signal} received: stopping after this step{again}", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
