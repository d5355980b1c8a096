"""Ctrl-C from acl's first moment: a SIGINT is recorded as well as raised, so one that a library swallowed
while acl was starting (an ``except BaseException`` around an optional import) still stops the run."""
from __future__ import annotations

import signal

_received: list[int] = []


def _record_and_raise(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Python's own behaviour (KeyboardInterrupt), remembered."""
    signal.signal(signal.SIGINT, _record_and_raise)


def received() -> bool:
    """Whether a SIGINT arrived since :func:`install`."""
    return bool(_received)
