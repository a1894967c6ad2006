"""The few prctl(2) controls the server sets on its processes, in one place with their numbers."""

from __future__ import annotations

from .libc import LIBC, last_error

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    if LIBC.prctl(option, value, 0, 0, 0) != 0:
        raise last_error()


def die_with_parent(signum: int) -> None:
    """Have the kernel send `signum` when the thread that made this process dies, even by SIGKILL
    (the caller then checks that its parent is still the one it expects: it may have died first)."""
    _prctl(_PR_SET_PDEATHSIG, signum)


def adopt_orphans() -> None:
    """Become a child subreaper: descendants whose parent dies come here to be reaped, not to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def make_dumpable() -> None:
    """Undo what a credential change does to the process: non-dumpable, /proc/self is root's."""
    _prctl(_PR_SET_DUMPABLE, 1)
