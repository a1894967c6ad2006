"""File descriptors, what a held connection costs a worker: the master raises RLIMIT_NOFILE's
soft limit to the hard one before it forks (the workers inherit it), and a worker holds as many
connections as its limit leaves once its own files are set aside."""

from __future__ import annotations

import resource

# An unlimited hard limit still stops at the kernel's fs.nr_open (2^20 by default).
NR_OPEN_DEFAULT = 1 << 20


def raise_limit() -> tuple[int, int]:
    """Raise the soft limit to the hard one, for this process and the ones it forks; returns
    (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, NR_OPEN_DEFAULT)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, wanted


def connection_share(reserved: int) -> int:
    """How many connections this process may hold: its soft limit less `reserved` descriptors
    (logs, memfds, listeners, the modules' files), one at least."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft - reserved, 1)
