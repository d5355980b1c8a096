"""Ctrl-C from acl's first moment.

A SIGINT is recorded as well as raised, so one that a library swallowed while acl was starting (an
``except BaseException`` around an optional import) still stops a training run before it writes. One that
lands inside an import is held until the import is done and then delivered again: a KeyboardInterrupt
raised halfway through importing torch leaves its modules half-built, and what follows fails in odd ways
(a RecursionError, a death by signal instead of exit status 130).
"""
from __future__ import annotations

import signal
import sys
import threading
import time

_received: list[int] = []
_held = threading.Event()  # a SIGINT is waiting for an import to end


def _in_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _deliver_after_import(thread_id: int) -> None:
    while True:
        time.sleep(0.02)
        frame = sys._current_frames().get(thread_id)
        if frame is None:  # the main thread has ended
            return
        if not _in_import(frame):
            _held.clear()
            signal.pthread_kill(thread_id, signal.SIGINT)
            return


def _record_and_raise(signum, frame) -> None:
    _received.append(signum)
    if _in_import(frame):
        if not _held.is_set():
            _held.set()
            threading.Thread(target=_deliver_after_import, args=(threading.main_thread().ident,), daemon=True).start()
        return
    raise KeyboardInterrupt


def install() -> None:
    """Python's own behaviour (KeyboardInterrupt), remembered, and never in the middle of an import."""
    signal.signal(signal.SIGINT, _record_and_raise)


def received() -> bool:
    """Whether a SIGINT arrived since :func:`install`."""
    return bool(_received)
