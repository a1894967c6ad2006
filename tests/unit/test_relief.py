"""prefork_wasm.relief: when the thread looks and acts (pure), and its protocol with the main
thread: a hand-off runs only while the main thread serves, once a run has reached THRESHOLD,
is tried again while something is left, and never after `end` has returned. The event loop's
side is test_eventloop.py's; a worker killed in a long request, test_held_connections.py's."""

from __future__ import annotations

import threading
import time

import pytest

from harness import wait_for
from prefork_wasm.relief import IDLE_AFTER, LINGER, RETRY, THRESHOLD, Relief, due, idle_too, next_look


def test_a_running_request_is_looked_at_when_it_reaches_the_threshold() -> None:
    assert next_look(100.0, 100.0, 0.0, done=False) == pytest.approx(THRESHOLD)
    assert next_look(100.005, 100.0, 0.0, done=False) == pytest.approx(THRESHOLD - 0.005)
    assert next_look(100.005, 100.0, 0.004, done=False) == pytest.approx(THRESHOLD - 0.001)  # held up 4 ms
    assert next_look(100.5, 100.0, 0.0, done=False) == RETRY  # past it, something left: try again soon
    assert next_look(100.5, 100.0, 0.0, done=True) == THRESHOLD  # all handed off: only a new run matters
    assert next_look(100.5, None, 0.0, done=False) == THRESHOLD  # none runs: one that begins reaches it no sooner


def test_a_hand_off_is_due_for_a_request_past_the_threshold_with_something_left() -> None:
    assert not due(100.0, None, 0.0, done=False)
    assert not due(100.0 + THRESHOLD / 2, 100.0, 0.0, done=False)  # a quick request: nothing moves
    assert due(100.0 + THRESHOLD + 1e-9, 100.0, 0.0, done=False)
    assert not due(100.5, 100.0, 0.0, done=True)
    # A quick request the scheduler kept from a CPU is no long request: nothing moves.
    assert not due(100.0 + 3 * THRESHOLD, 100.0, 2.5 * THRESHOLD, done=False)
    assert due(100.0 + 3 * THRESHOLD, 100.0, 1.5 * THRESHOLD, done=False)


class Main:
    """The main thread's side: whether it is inside serve, and the hand-offs the thread made."""

    def __init__(self, left: int = 1) -> None:
        self.serving = False
        self.left = left  # hand-offs of idle connections before none is left (a full socket takes several)
        self.calls: list[tuple[float, bool]] = []  # when, and whether idle connections were to go too
        self.outside: list[float] = []  # hand-offs while the main thread was not serving: none allowed
        self.errors: list[str] = []

    def hand_off(self, idle: bool) -> bool:
        now = time.monotonic()
        self.calls.append((now, idle))
        if not self.serving:
            self.outside.append(now)
        time.sleep(0.002)  # a hand-off takes a while: `end` must wait for it
        if idle:
            self.left -= 1
        return self.left <= 0

    def run(self, relief: Relief, seconds: float) -> float:
        """One request of `seconds`; when it began."""
        started = time.monotonic()
        self.serving = True
        relief.begin(started)
        time.sleep(seconds)
        relief.end()
        self.serving = False
        return started


def test_a_long_request_has_requests_handed_off_at_each_look_and_idle_connections_later() -> None:
    main = Main()
    relief = Relief(main.hand_off, main.errors.append)
    relief.start()
    try:
        for _ in range(200):
            main.run(relief, 0.0)  # quick requests, one after another
        started = time.monotonic()
        main.serving = True
        relief.begin(started)
        wait_for(lambda: main.left <= 0, what="the idle connections handed off")
        time.sleep(3 * RETRY)  # nothing left: no more looks
        relief.end()
        main.serving = False
        assert main.outside == []
        looks = [(at - started, idle) for at, idle in main.calls if at >= started]
        assert looks[0][0] >= THRESHOLD
        firsts = [idle for _, idle in looks].index(True)
        assert firsts > 1  # before IDLE_AFTER, look after look: only what has a request
        assert looks[firsts][0] >= IDLE_AFTER and len(looks) == firsts + 1  # then the idle ones: nothing is left
    finally:
        relief.stop()


def test_a_quick_request_moves_nothing_and_a_long_one_only_what_has_a_request_before_idle_after() -> None:
    assert not idle_too(100.0 + IDLE_AFTER / 2, 100.0, 0.0)
    assert idle_too(100.0 + IDLE_AFTER + 1e-9, 100.0, 0.0)
    assert not idle_too(100.0 + IDLE_AFTER + 0.1, 100.0, 0.2)  # held up by the scheduler


def test_what_a_full_socket_kept_is_tried_again_until_none_is_left() -> None:
    main = Main(left=3)
    relief = Relief(main.hand_off, main.errors.append)
    relief.start()
    try:
        main.serving = True
        relief.begin(time.monotonic())
        wait_for(lambda: main.left <= 0, what="three hand-offs of idle connections")
        time.sleep(3 * RETRY)
        relief.end()
        main.serving = False
        assert [idle for _, idle in main.calls].count(True) == 3 and main.outside == []
    finally:
        relief.stop()


def test_end_waits_for_a_hand_off_under_way_and_none_starts_after_it() -> None:
    main = Main(left=1000)  # never done: the thread would go on trying
    relief = Relief(main.hand_off, main.errors.append)
    relief.start()
    try:
        for _ in range(20):
            main.run(relief, THRESHOLD + 3 * RETRY)
            count = len(main.calls)
            time.sleep(2 * RETRY)
            assert len(main.calls) == count  # nothing after end() returned
        assert main.outside == [] and main.calls
    finally:
        relief.stop()


def test_the_thread_sleeps_when_the_worker_idles_and_a_request_wakes_it() -> None:
    main = Main()
    relief = Relief(main.hand_off, main.errors.append)
    relief.start()
    try:
        main.run(relief, 0.0)
        wait_for(lambda: relief._asleep, timeout=LINGER + 5, what="the thread asleep")
        request = threading.Thread(target=main.run, args=(relief, 4 * THRESHOLD))
        request.start()
        wait_for(lambda: main.calls, what="the hand-off of a long request begun while the thread slept")
        request.join()
        assert main.outside == []
    finally:
        relief.stop()


def test_a_failing_hand_off_is_logged_once_per_run_and_the_thread_goes_on() -> None:
    main = Main()

    def fails(idle: bool) -> bool:
        raise OSError("broken")

    relief = Relief(fails, main.errors.append)
    relief.start()
    try:
        for run in (1, 2):
            relief.begin(time.monotonic())
            wait_for(lambda run=run: len(main.errors) == run, what=f"run {run}'s failure logged")
            time.sleep(3 * RETRY)  # not tried again in the same run
            relief.end()
        assert len(main.errors) == 2 and "OSError('broken')" in main.errors[0]
    finally:
        relief.stop()
