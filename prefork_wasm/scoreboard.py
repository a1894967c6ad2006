"""The scoreboard: one slot per worker in anonymous shared memory, mapped before the first fork.

Each worker writes only its own slot, with plain stores (no locks on the request path); the
master reads every slot for pool maintenance, hung-worker detection and server-status. A
reader may see a slot mid-update; every field is a single machine word or a short string, so
the worst case is a status page that is a moment stale.

States are Apache's letters (mod_status):
  '.' open slot      'S' starting      '_' waiting for a connection
  'R' reading        'W' sending reply 'K' keep-alive (waiting for the next request)
  'L' logging        'G' gracefully finishing (will exit after this connection)
  'I' idle cleanup   (our use: the worker is exiting)
"""

from __future__ import annotations

import ctypes
import mmap
import time
from collections.abc import Iterator

OPEN, STARTING, WAITING, READING, SENDING, KEEPALIVE, LOGGING, GRACEFUL, CLEANUP = (
    b".", b"S", b"_", b"R", b"W", b"K", b"L", b"G", b"I"
)
BUSY_STATES = frozenset({READING, SENDING, KEEPALIVE, LOGGING, GRACEFUL})

REQUEST_CHARS = 96
MODULE_CHARS = 48


class Slot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int32),
        ("generation", ctypes.c_int32),
        ("state", ctypes.c_char),
        ("quit", ctypes.c_char),  # set by the master: finish this connection, then exit
        ("accesses", ctypes.c_uint64),  # requests served by this worker
        ("connections", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),  # response body bytes served
        ("started", ctypes.c_double),  # time.time() when the worker forked
        ("heartbeat", ctypes.c_double),  # time.monotonic() of the worker's last sign of life
        ("request_start", ctypes.c_double),  # time.time() when the current/last request began
        ("request_seconds", ctypes.c_double),  # duration of the last finished request
        ("request", ctypes.c_char * REQUEST_CHARS),  # current or last request line
        ("module", ctypes.c_char * MODULE_CHARS),  # module of that request
        ("memory", ctypes.c_uint64),  # last sampled memory figure, written by the master
    ]

    def clear(self) -> None:
        ctypes.memset(ctypes.addressof(self), 0, ctypes.sizeof(self))
        self.state = OPEN

    def claim(self, pid: int, generation: int) -> None:
        """Master, at fork: the slot now belongs to `pid`."""
        self.clear()
        self.pid = pid
        self.generation = generation
        self.state = STARTING
        self.started = time.time()
        self.heartbeat = time.monotonic()


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, ctypes.sizeof(Slot) * slots)  # MAP_SHARED | MAP_ANONYMOUS
        self.slots = (Slot * slots).from_buffer(self._map)
        for slot in self.slots:
            slot.clear()

    def __len__(self) -> int:
        return len(self.slots)

    def free_slot(self) -> int | None:
        for index, slot in enumerate(self.slots):
            if slot.state == OPEN:
                return index
        return None

    def find(self, pid: int) -> Slot | None:
        for slot in self.slots:
            if slot.pid == pid and slot.state != OPEN:
                return slot
        return None

    def in_use(self) -> Iterator[Slot]:
        return (slot for slot in self.slots if slot.state != OPEN)
