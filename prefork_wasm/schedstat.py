"""A thread's schedstat: how long it has run on a CPU, and waited, runnable, for one.

The relief thread reads the serving thread's wait for a CPU (relief.py: time the scheduler
took is no long request), and the event loop reads its own thread's both (held.blocks: whether
the guests sleep). One pread of a descriptor kept open; nothing where the kernel does not say.
"""

from __future__ import annotations

import os


class SchedStat:
    """The schedstat of one thread of this process, by its native id (readable from any thread)."""

    def __init__(self, native_id: int) -> None:
        try:
            self._fd: int | None = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def read(self) -> tuple[float, float] | None:
        """Seconds on a CPU and seconds runnable, waiting for one, so far; None where unknown."""
        if self._fd is None:
            return None
        try:
            on_cpu, runnable, _ = os.pread(self._fd, 128, 0).split()
            return int(on_cpu) / 1e9, int(runnable) / 1e9
        except (OSError, ValueError):
            return None

    def run_delay(self) -> float:
        """Seconds runnable, waiting for a CPU, so far; 0 where unknown."""
        times = self.read()
        return times[1] if times is not None else 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
