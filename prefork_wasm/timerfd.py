"""A one-shot timer that a thread waits on as a file descriptor (timerfd_create(2)).

The guest watcher must look at a run once it has lasted a few milliseconds, but most runs end
well before. Polling from its thread woke it hundreds of times a second on a busy worker, each
wake-up taking the GIL from the request being served; with this timer the main thread arms it
when a run begins and re-arms it when the run ends, one system call each, and the watcher
sleeps until a run is long. Python 3.11 has no os.timerfd_create, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os

from .libc import LIBC, last_error

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _spec(seconds: float) -> _Itimerspec:
    """A one-shot setting; a zero `seconds` would disarm, so the least is a nanosecond."""
    ns = max(int(seconds * 1e9), 1)
    return _Itimerspec(_Timespec(0, 0), _Timespec(ns // 1_000_000_000, ns % 1_000_000_000))


class OneShotTimer:
    """Set to fire once after a delay; `wait` blocks until it has fired. Setting it again before
    it fires replaces the delay, and forgets a firing not yet waited for (timerfd_settime)."""

    def __init__(self) -> None:
        self.fd = LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_CLOEXEC)
        if self.fd < 0:
            raise last_error()
        self._settime = LIBC.timerfd_settime
        self._specs: dict[float, object] = {}  # by delay: the few a caller uses, built once

    def set(self, seconds: float) -> None:
        """Fire `seconds` from now."""
        spec = self._specs.get(seconds)
        if spec is None:
            spec = self._specs[seconds] = ctypes.byref(_spec(seconds))
        if self._settime(self.fd, 0, spec, None) < 0:
            raise last_error()

    def wait(self) -> None:
        """Block until the timer fires (the GIL is released meanwhile)."""
        os.read(self.fd, 8)
