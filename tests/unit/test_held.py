"""prefork_wasm.held: the deadlines of held connections, whether a worker accepts one more, the bound."""

from __future__ import annotations

import random

import pytest

from prefork_wasm.held import (
    Accept,
    Deadlines,
    Peer,
    Throttle,
    balance_margin,
    may_accept,
    wait_for,
)


def test_deadlines_give_the_nearest_and_skip_moved_and_removed_ones() -> None:
    deadlines: Deadlines[str] = Deadlines()
    assert deadlines.next() is None
    deadlines.set("a", 5.0)
    deadlines.set("b", 3.0)
    deadlines.set("c", 4.0)
    assert deadlines.next() == 3.0
    deadlines.set("b", 9.0)  # moved later: its old entry no longer counts
    assert deadlines.next() == 4.0
    deadlines.discard("c")
    assert deadlines.next() == 5.0
    assert deadlines.expired(4.9) == []
    assert deadlines.expired(9.0) == ["a", "b"]
    assert deadlines.next() is None and len(deadlines) == 0


def test_deadlines_moved_many_times_stay_small_and_right() -> None:
    deadlines: Deadlines[int] = Deadlines()
    rng = random.Random(7)
    latest = {}
    for step in range(20000):
        key = rng.randrange(50)
        latest[key] = at = rng.uniform(0, 1000)
        deadlines.set(key, at)
        if step % 7 == 0:
            gone = rng.randrange(50)
            deadlines.discard(gone)
            latest.pop(gone, None)
    assert len(deadlines._heap) <= 2 * len(latest) + 65  # outdated entries are dropped as they pile up
    assert deadlines.next() == min(latest.values())
    assert deadlines.expired(500.0) == sorted((k for k, v in latest.items() if v <= 500.0), key=latest.__getitem__)


def test_equal_deadlines_expire_together_in_the_order_set() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for key in "xyz":
        deadlines.set(key, 1.0)
    assert deadlines.expired(1.0) == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("nearest", "now", "expected"),
    [(None, 10.0, 1.0), (10.5, 10.0, 0.5), (9.0, 10.0, 0.0), (30.0, 10.0, 1.0)],
)
def test_the_wait_is_until_the_nearest_deadline_and_never_longer_than_the_wake_up(
    nearest: float | None, now: float, expected: float
) -> None:
    assert wait_for(nearest, now, 1.0) == expected


LOTS = 1 << 20  # descriptors a worker may hold: never the limit unless a test says so


def peers(*held: int, busy: tuple[int, ...] = ()) -> list[Peer]:
    return [Peer(h, i not in busy) for i, h in enumerate(held)]


def test_a_worker_accepts_while_it_holds_no_more_than_the_least_loaded_available_peer_plus_a_margin() -> None:
    assert may_accept(0, 0, peers(0, 0, 0), bound=100, own_limit=LOTS) is Accept.YES
    assert may_accept(1, 0, peers(0, 0, 0), bound=100, own_limit=LOTS) is Accept.YES
    assert may_accept(2, 0, peers(0, 3, 3), bound=100, own_limit=LOTS) is Accept.BALANCE
    assert may_accept(2, 0, peers(1, 3, 3), bound=100, own_limit=LOTS) is Accept.YES


def test_a_peer_busy_in_a_long_request_does_not_hold_the_others_back() -> None:
    assert may_accept(9, 0, peers(0, 9, busy=(0,)), bound=100, own_limit=LOTS) is Accept.YES
    assert may_accept(9, 0, peers(0, busy=(0,)), bound=100, own_limit=LOTS) is Accept.YES  # alone available


def test_at_the_bound_a_worker_makes_room_by_closing_an_idle_connection_or_leaves_new_ones_waiting() -> None:
    assert may_accept(50, 3, peers(50), bound=100, own_limit=LOTS) is Accept.MAKE_ROOM
    assert may_accept(50, 0, peers(50), bound=100, own_limit=LOTS) is Accept.FULL
    assert may_accept(49, 0, peers(50), bound=100, own_limit=LOTS) is Accept.YES
    assert may_accept(60, 0, peers(0, busy=(0,)), bound=0, own_limit=LOTS) is Accept.YES  # 0: no bound


@pytest.mark.parametrize(("least", "margin"), [(0, 1), (7, 1), (8, 2), (250, 32), (1000, 126)])
def test_the_balance_margin_grows_with_the_load(least: int, margin: int) -> None:
    assert balance_margin(least) == margin


def test_connections_arriving_one_at_a_time_spread_evenly_over_the_workers() -> None:
    held = [0] * 8
    for _ in range(2000):
        # whichever worker the kernel wakes: the first that the balance lets accept takes it
        order = random.Random(len(held)).sample(range(8), 8)
        for i in order:
            others = [Peer(h, True) for j, h in enumerate(held) if j != i]
            if may_accept(held[i], 0, others, 0, LOTS) is Accept.YES:
                held[i] += 1
                break
    assert sum(held) == 2000
    assert max(held) - min(held) <= balance_margin(min(held)) + 1


def test_a_worker_out_of_descriptors_makes_room_or_leaves_new_connections_waiting() -> None:
    assert may_accept(10, 2, peers(0), bound=0, own_limit=10) is Accept.MAKE_ROOM
    assert may_accept(10, 0, peers(0), bound=0, own_limit=10) is Accept.FULL
    assert may_accept(9, 0, [], bound=0, own_limit=10) is Accept.YES


def test_the_throttle_says_yes_once_per_period() -> None:
    throttle = Throttle(60.0)
    assert [throttle.due(t) for t in (100.0, 101.0, 159.9, 160.0, 161.0)] == [True, False, False, True, False]
