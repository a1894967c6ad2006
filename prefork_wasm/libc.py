"""The C library, for the few system calls Python 3.11 does not wrap (prctl, timerfd, clone):
loaded once, keeping errno, which `last_error` turns into the OSError Python would raise."""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)


def last_error() -> OSError:
    """The failure of the last LIBC call that returned one (its errno)."""
    errno = ctypes.get_errno()
    return OSError(errno, os.strerror(errno))
