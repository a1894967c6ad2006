"""The scoreboard: one slot per worker in anonymous shared memory, mapped before the first fork.

Each worker writes only its own slot, with plain stores (no locks on the request path); the
master reads every slot for pool maintenance, hung-worker detection and server-status. A
reader may see a slot mid-update; every field is a single machine word or a short string, so
the worst case is a status page that is a moment stale.

Totals survive their workers: when the master reaps a worker it adds the slot's final counters
(server-status's and the metrics' `Counts` block) into a master-owned `Cumulative` record
before the slot can be reused, so totals (cumulative + live slots) never go backwards across
recycles, kills and restarts. The master is the record's only writer; it bumps a sequence
number around each fold (a seqlock) so that a reader never counts a dead worker's requests
twice or not at all. The record also carries what the master alone knows and a worker answers
from: the generation, whether the server is stopping, and the metrics' label names.

Each slot also counts the connections its worker holds without serving them, by state
(held.STATE_NAMES: reading a head, keep-alive, waiting for the worker, closing): the workers
balance new connections by these counts, and server-status and the metrics show them. A
worker also says there whether its guests block, which decides which workers gather
connections (held.gatherers), and whether it found itself a spare, for server-status and the
metrics.

States are Apache's letters (mod_status):
  '.' open slot      'S' starting      '_' waiting for a connection
  'R' reading        'W' sending reply 'K' keep-alive (no longer shown: held connections wait
  'L' logging        'G' gracefully finishing        in the held counts, not in a worker)
  'I' idle cleanup   (our use: the worker is exiting)
"""

from __future__ import annotations

import array
import ctypes
import mmap
import operator
import time
from dataclasses import dataclass

from .counters import WORDS, Counts, Names
from .held import STATE_NAMES

OPEN, STARTING, WAITING, READING, SENDING, KEEPALIVE, LOGGING, GRACEFUL, CLEANUP = (
    b".", b"S", b"_", b"R", b"W", b"K", b"L", b"G", b"I"
)
BUSY_STATES = frozenset({READING, SENDING, KEEPALIVE, LOGGING, GRACEFUL})
SERVING_STATES = frozenset({WAITING, READING, SENDING, KEEPALIVE, LOGGING})

# Slot.quit, set by the master: how the worker leaves. HAND_OVER: finish the request in flight,
# pass every held connection to the workers that stay (handover.py), exit. DRAIN: no worker
# follows (a graceful stop): serve what has arrived with `Connection: close`, close idle
# connections, exit once none is left.
SERVE, HAND_OVER, DRAIN = b"\x00", b"\x01", b"\x02"

REQUEST_CHARS = 96
MODULE_CHARS = 48

# The server's phase, written by the master, read by the health handler.
STARTING_UP, SERVING, STOPPING = 0, 1, 2

# Linux: the map is sized for ServerLimit slots but only the pages in use take memory; do not
# reserve swap for all of them.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class Slot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int32),
        ("generation", ctypes.c_int32),
        ("state", ctypes.c_char),
        ("quit", ctypes.c_char),  # set by the master: SERVE, HAND_OVER or DRAIN
        ("accesses", ctypes.c_uint64),  # requests served by this worker
        ("connections", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),  # response body bytes served
        ("heartbeat", ctypes.c_double),  # time.monotonic() of the worker's last sign of life
        ("request_start", ctypes.c_double),  # time.time() when the current/last request began
        ("request", ctypes.c_char * REQUEST_CHARS),  # current or last request line
        ("module", ctypes.c_char * MODULE_CHARS),  # module of that request
        ("memory", ctypes.c_uint64),  # last sampled memory figure, written by the master
        ("held", ctypes.c_uint32 * len(STATE_NAMES)),  # connections held, by state (held.STATE_NAMES)
        ("blocking", ctypes.c_bool),  # its guests lately slept (held.blocks): it gathers without a CPU's place
        ("spare", ctypes.c_bool),  # its last look found it spare (held.gatherers): it takes no new connections
        ("counts", Counts),  # the metrics' counters (counters.Recorder writes them)
    ]

    def clear(self) -> None:
        ctypes.memset(ctypes.addressof(self), 0, ctypes.sizeof(self))
        self.state = OPEN

    def serves(self) -> bool:
        """Its worker serves: not starting, not told to leave, not leaving or exiting."""
        return self.quit == SERVE and self.state in SERVING_STATES

    def claim(self, pid: int, generation: int) -> None:
        """Master, at fork: the slot now belongs to `pid`."""
        self.clear()
        self.pid = pid
        self.generation = generation
        self.state = STARTING
        self.heartbeat = time.monotonic()


_STATE_OFFSET: int = Slot.__dict__["state"].offset


class Cumulative(ctypes.Structure):
    """The final counters of every worker that has exited, written by the master alone."""

    _fields_ = [
        ("sequence", ctypes.c_uint64),  # odd while the master folds a slot in
        ("accesses", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("generation", ctypes.c_int32),  # the generation being served (or prepared, at start)
        ("phase", ctypes.c_int32),  # STARTING_UP, SERVING or STOPPING
        ("counts", Counts),
    ]


@dataclass(frozen=True, slots=True)
class Counters:
    accesses: int
    bytes: int


@dataclass(slots=True)
class Roles:
    """Serving workers: those that take new connections, the spares, and of all of them those
    whose guests block (held.gatherers)."""

    gathering: int = 0
    spare: int = 0
    blocking: int = 0


class Scoreboard:
    def __init__(self, slots: int) -> None:
        head = ctypes.sizeof(Cumulative) + ctypes.sizeof(Names)
        size = head + ctypes.sizeof(Slot) * slots
        # MAP_SHARED | MAP_ANONYMOUS, zero-filled: every slot is already clear, only its state is set
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | _MAP_NORESERVE)
        self.cumulative = Cumulative.from_buffer(self._map)
        self.names = Names.from_buffer(self._map, ctypes.sizeof(Cumulative))
        self.slots = (Slot * slots).from_buffer(self._map, head)
        for slot in self.slots:
            slot.state = OPEN

    def __len__(self) -> int:
        return len(self.slots)

    def states(self) -> bytes:
        """Every slot's state letter, in slot order, read in one step: cheaper than a field
        read per slot when a worker looks for the few slots in use among ServerLimit."""
        start = ctypes.addressof(self.slots) - ctypes.addressof(self.cumulative) + _STATE_OFFSET
        return self._map[start : start + ctypes.sizeof(Slot) * len(self.slots) : ctypes.sizeof(Slot)]

    def index(self, slot: Slot) -> int:
        """`slot`'s place on the board (a Slot read from it is a view at that place)."""
        return (ctypes.addressof(slot) - ctypes.addressof(self.slots)) // ctypes.sizeof(Slot)

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

    def roles(self) -> Roles:
        """The serving workers (not starting or leaving) by role, for server-status and the metrics."""
        roles = Roles()
        for slot in self.slots:
            if slot.serves():
                if slot.spare:
                    roles.spare += 1
                else:
                    roles.gathering += 1
                roles.blocking += slot.blocking
        return roles

    def held(self) -> list[int]:
        """Connections the workers hold, by state (held.STATE_NAMES), summed over live slots."""
        sums = [0] * len(STATE_NAMES)
        for slot in self.slots:
            if slot.state != OPEN:
                for index, count in enumerate(slot.held):
                    sums[index] += count
        return sums

    def release(self, index: int) -> None:
        """Master, after reaping the slot's worker: fold its counters into the cumulative
        record, then free the slot (in this order, so no count is ever lost)."""
        slot, total = self.slots[index], self.cumulative
        total.sequence += 1
        total.accesses += slot.accesses
        total.bytes += slot.bytes
        folded = words(total.counts)
        folded[:] = array.array("Q", map(operator.add, folded, words(slot.counts)))
        slot.clear()
        total.sequence += 1

    def counters(self) -> Counters:
        """Totals since start: exited workers' plus live slots', consistent with any fold."""
        total = self.cumulative
        while True:
            sequence = total.sequence
            if sequence % 2:
                time.sleep(0)  # the master is mid-fold: a few stores away from done
                continue
            live = [slot for slot in self.slots if slot.state != OPEN]
            counters = Counters(
                total.accesses + sum(s.accesses for s in live), total.bytes + sum(s.bytes for s in live)
            )
            if total.sequence == sequence:
                return counters

    def counts(self) -> list[int]:
        """Every metrics counter summed over exited workers and live slots, consistent with any
        fold (the seqlock, as in `counters`)."""
        total = self.cumulative
        while True:
            sequence = total.sequence
            if sequence % 2:
                time.sleep(0)
                continue
            blocks = [words(total.counts), *(words(s.counts) for s in self.slots if s.state != OPEN)]
            sums = list(map(sum, zip(*blocks, strict=True))) if len(blocks) > 1 else list(blocks[0])
            if total.sequence == sequence:
                return sums


def words(counts: Counts) -> memoryview:
    """A Counts block as its 64-bit words."""
    view = memoryview(counts).cast("B").cast("Q")
    assert len(view) == WORDS
    return view
