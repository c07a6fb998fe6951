"""Stopping a training on SIGINT / SIGTERM: the first asks, the second insists.

The first signal calls the trainer back (it saves checkpoint_latest.pt at the next iteration
boundary, then returns); one full-size iteration on a CPU takes minutes, so a second signal
stops at once: its handler raises `StopNow` wherever the main thread is (inside a step, a
checkpoint save, waiting for a batch). The exception unwinds through every `with` block on the
way, so an atomic write in progress removes its temporary file and the previous file stays as
it was; the trainer then shuts its loader workers down without waiting for their queues.

A C++ operator (one convolution) is not interrupted: the handler runs when it returns.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):
    """A second stop signal. Not an Exception, so that no `except Exception` on the way (a loader,
    a writer) mistakes it for an error it can handle; not a KeyboardInterrupt, which
    batchgenerators catches to shut its workers down slowly."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


@contextlib.contextmanager
def stop_signals(on_first: Callable[[int], None]) -> Iterator[None]:
    """SIGINT and SIGTERM handlers for a block: the first signal calls `on_first(signum)`, any
    later one logs a line and raises `StopNow`. The previous handlers come back at the end.
    Outside the main thread (signals reach only it) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if received:
            log.warning("received %s again: stopping at once, without saving", name)
            raise StopNow(signum)
        received.append(signum)
        on_first(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
