"""Relief: while a worker runs a long request, its other held connections go to idle workers.

A worker serves one request at a time, so a request that arrives on another connection it holds
waits for the running one. Once the running request has lasted THRESHOLD (besides the time the
scheduler kept it from a CPU), a second thread of the worker looks every RETRY at the other
connections it holds: those whose requests have come go to the hand-over socket (handover.py),
as a leaving worker's do, and after IDLE_AFTER the idle ones too, until none is left (the event
loop's `_relieve`). Idle workers adopt them at once; those no worker takes yet wait in the
socket, their descriptors held by the kernel. (Should the worker be killed meanwhile, its
keeper passes on what is still with it: keeper.py.)

The protocol between the two threads (the event loop's structures belong to the main thread,
which does not touch them while `connection.serve` runs):
- `begin` (main thread, just before serve): marks the run as serving; attribute writes only,
  and an Event set when the thread sleeps after an idle while.
- The thread acts only under `_lock`, and only while the run it saw is still the serving one.
- `end` (main thread, just after serve): takes `_lock` and clears the mark; a hand-off under
  way finishes first, none starts after. A request shorter than THRESHOLD finds the lock free.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from .schedstat import SchedStat

# How long a request runs before the requests already sent on the worker's other connections are
# handed off, and after it, at each look, those that arrive. A hand-off costs the adopting worker
# about as much CPU as a quick request, and a moved connection does not come back, so quick
# requests (well under a millisecond) must stay far under it; a client whose request waits
# behind a guest this slow barely notices the wait. Time the main thread spent runnable but
# waiting for a CPU does not count (`held_up`): on a busy machine the scheduler holds quick
# requests up longer than this.
THRESHOLD = 0.02
# How long a request runs before the worker's idle connections go too (a message of them per
# look), so that whatever comes later cannot be lost with the worker. Not at THRESHOLD: a worker
# whose idle connections went away comes back holding few, and the balance then has it take
# new connections alone until it holds as many as its peers (a burst of hundreds waits on one
# worker); a request this long is rare, and a kill in it (a stuck guest, a memory limit) likelier.
IDLE_AFTER = 0.5
# While a long request runs and something is left to hand off, the thread looks this often.
RETRY = 0.005
# The thread blocks once no request has begun for this long: an idle worker costs nothing,
# and a busy one does not wake it for every request.
LINGER = 0.25

# Hands off what has a request (and idle connections too when told so); True once nothing is
# left to hand off.
HandOff = Callable[[bool], bool]


def next_look(now: float, started: float | None, held_up: float, done: bool) -> float:
    """Seconds until the thread looks again. A request that runs (`started`, and `held_up`
    seconds waiting for a CPU since then) is looked at when it reaches THRESHOLD, and again
    after RETRY while something is left to hand off (not `done`); with none running, a request
    that begins after `now` reaches THRESHOLD no sooner than THRESHOLD from now. So a worker
    busy with quick requests wakes the thread about once per THRESHOLD, and a long request has
    its connections handed off when it reaches it."""
    if started is None or done:
        return THRESHOLD
    return max(started + held_up + THRESHOLD - now, RETRY)


def due(now: float, started: float | None, held_up: float, done: bool) -> bool:
    """Whether to hand off now: a request runs, has reached THRESHOLD (not counting the time it
    was `held_up` by the scheduler), and something may be left."""
    return started is not None and not done and now - started - held_up >= THRESHOLD


def idle_too(now: float, started: float, held_up: float) -> bool:
    """Whether the running request is long enough (IDLE_AFTER) for idle connections to go too."""
    return now - started - held_up >= IDLE_AFTER


class Relief:
    """The worker's relief thread; `hand_off` runs in it, under the lock, while the main thread serves."""

    def __init__(self, hand_off: HandOff, error: Callable[[str], None]) -> None:
        self._hand_off = hand_off
        self._error = error  # the error log's: a failed hand-off is a bug, and the worker goes on
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._asleep = False
        self._stopping = False
        self._runs = 0
        self._serving: tuple[int, float] | None = None  # (run, its start) while the main thread serves
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """From the thread that serves (the event loop's): its run delay is the one watched."""
        stat = SchedStat(threading.get_native_id())
        self._thread = threading.Thread(target=self._watch, args=(stat,), name="relief", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The event loop has left: the thread ends."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def begin(self, started: float) -> None:
        """The main thread serves a request that began at `started` (time.monotonic())."""
        self._runs += 1
        self._serving = (self._runs, started)  # one store: the thread reads run and start together
        if self._asleep:
            self._wake.set()

    def end(self) -> None:
        """The main thread has served it: it owns the event loop's structures again."""
        with self._lock:
            self._serving = None

    def _try_hand_off(self, idle: bool) -> bool:
        try:
            return self._hand_off(idle)
        except Exception as e:  # what is left stays with the worker; the thread goes on for the next run
            self._error(f"worker {os.getpid()}: handing its other connections off failed: {e!r}")
            return True

    def _watch(self, stat: SchedStat) -> None:
        try:
            self._loop(stat)
        finally:
            stat.close()

    def _loop(self, stat: SchedStat) -> None:
        seen, busy_at = self._runs, time.monotonic()
        done_with = 0  # the run whose connections are all handed off
        run, delay_before = 0, 0.0  # the run last seen, and the main thread's run delay at the look before it
        delay = stat.run_delay()
        while not self._stopping:
            serving = self._serving
            now = time.monotonic()
            last_delay, delay = delay, stat.run_delay()
            started: float | None = None
            held_up, done = 0.0, False
            if serving is not None:
                if serving[0] != run:  # first seen: its wait for a CPU counts from the look before (a bit early)
                    run, delay_before = serving[0], last_delay
                started, held_up, done = serving[1], delay - delay_before, serving[0] == done_with
            if serving is not None and due(now, started, held_up, done):
                idle = idle_too(now, serving[1], held_up)
                with self._lock:
                    if self._serving is serving and self._try_hand_off(idle):
                        done_with = serving[0]
                done = serving[0] == done_with
                now = time.monotonic()
            if self._runs != seen or serving is not None:
                seen, busy_at = self._runs, now
            elif now - busy_at > LINGER:
                self._asleep = True  # begin() sets the event after marking its run: no lost wake-up
                if self._serving is None and not self._stopping:
                    self._wake.wait()
                self._wake.clear()
                self._asleep = False
                busy_at, delay = time.monotonic(), stat.run_delay()
                continue
            time.sleep(next_look(now, started, held_up, done))
