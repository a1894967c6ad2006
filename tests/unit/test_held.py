"""prefork_wasm.held: the deadlines of held connections, whether a worker accepts one more, which
workers gather connections, whether a worker's guests block, the bound."""

from __future__ import annotations

import random

import pytest

from prefork_wasm.held import (
    BLOCKING_SHARE,
    Accept,
    Deadlines,
    Peer,
    Throttle,
    balance_margin,
    blocks,
    fair_share,
    gatherers,
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
    assert may_accept(0, 0, peers(0, 0, 0), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES
    assert may_accept(1, 0, peers(0, 0, 0), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES
    assert may_accept(2, 0, peers(0, 3, 3), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.BALANCE
    assert may_accept(2, 0, peers(1, 3, 3), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES


def test_a_peer_busy_in_a_long_request_does_not_hold_the_others_back() -> None:
    assert may_accept(9, 0, peers(0, 9, busy=(0,)), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES
    assert may_accept(9, 0, peers(0, busy=(0,)), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES  # alone available


def test_at_the_bound_a_worker_makes_room_by_closing_an_idle_connection_or_leaves_new_ones_waiting() -> None:
    assert may_accept(50, 3, peers(50), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.MAKE_ROOM
    assert may_accept(50, 0, peers(50), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.FULL
    assert may_accept(49, 0, peers(50), bound=100, own_limit=LOTS, cpus=LOTS) is Accept.YES
    assert may_accept(60, 0, peers(0, busy=(0,)), bound=0, own_limit=LOTS, cpus=LOTS) is Accept.YES  # 0: no bound


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
            if may_accept(held[i], 0, others, 0, LOTS, cpus=LOTS) is Accept.YES:
                held[i] += 1
                break
    assert sum(held) == 2000
    assert max(held) - min(held) <= balance_margin(min(held)) + 1


def board(held: list[int], me: int, blocking: tuple[int, ...] = (), busy: tuple[int, ...] = ()) -> list[Peer]:
    """The peers of worker `me` among workers in slot order holding `held`."""
    return [Peer(h, i not in busy, i in blocking, i < me) for i, h in enumerate(held) if i != me]


def spread(workers: int, cpus: int, connections: int, blocking: tuple[int, ...] = ()) -> list[int]:
    """Where `connections` arriving one at a time end up, whichever worker the kernel wakes."""
    held = [0] * workers
    wake = random.Random(workers * 1000 + cpus)
    for _ in range(connections):
        for i in wake.sample(range(workers), workers):
            verdict = may_accept(held[i], 0, board(held, i, blocking), 0, LOTS, cpus=cpus, blocking=i in blocking)
            if verdict is Accept.YES:
                held[i] += 1
                break
    return held


def test_connections_gather_on_as_many_workers_as_there_are_cpus_the_first_in_slot_order() -> None:
    held = spread(workers=8, cpus=2, connections=1000)
    assert sum(held) == 1000 and held[2:] == [0] * 6
    assert abs(held[0] - held[1]) <= balance_margin(min(held[:2])) + 1
    assert all(h > 0 for h in spread(workers=4, cpus=4, connections=400))
    assert all(h > 0 for h in spread(workers=2, cpus=8, connections=10))  # fewer workers than CPUs


def test_a_worker_whose_guests_block_gathers_without_taking_a_cpus_place() -> None:
    held = spread(workers=6, cpus=2, connections=600, blocking=(0, 3))
    assert sum(held) == 600 and held[4:] == [0, 0]  # 0 and 3 block: 1 and 2 are the steady two
    assert min(held[:4]) >= 600 // 4 - balance_margin(150) - 1
    every = spread(workers=4, cpus=2, connections=400, blocking=(0, 1, 2, 3))
    assert min(every) >= 100 - balance_margin(100) - 1  # all block: all gather, as before workers gathered


def test_a_spare_steps_in_for_a_gatherer_stuck_in_a_long_request_or_full() -> None:
    assert gatherers(board([5, 5, 0, 0], me=2), blocking=False, cpus=2, own_limit=LOTS) is None
    stuck = gatherers(board([5, 5, 0, 0], me=2, busy=(1,)), blocking=False, cpus=2, own_limit=LOTS)
    assert stuck is not None and [p.held for p in stuck] == [5]  # worker 0 and this one
    full = gatherers(board([10, 5, 0, 0], me=2), blocking=False, cpus=2, own_limit=10)
    assert full is not None and [p.held for p in full] == [5]
    assert gatherers(board([5, 5, 0, 0], me=3, busy=(1,)), blocking=False, cpus=2, own_limit=LOTS) is None
    assert may_accept(0, 0, board([5, 5, 0, 0], me=3), 0, LOTS, cpus=2) is Accept.SPARE


def burst_turns(held: list[int], backlog: int, with_backlog: bool = True) -> int:
    """The turns the gatherers (all of `held`, on as many CPUs) take to accept a burst of
    `backlog` connections, one gatherer's turn after another's (the others are serving
    meanwhile), each accepting while may_accept says yes."""
    turns = 0
    while backlog and turns < 1000:
        i = turns % len(held)
        turns += 1
        while backlog:
            seen = backlog if with_backlog else 0
            if may_accept(held[i], 0, board(held, i), 0, LOTS, cpus=len(held), backlog=seen) is not Accept.YES:
                break
            held[i] += 1
            backlog -= 1
    return turns


def test_a_burst_is_shared_out_in_one_turn_of_each_gatherer_not_a_margin_a_turn() -> None:
    held = [10, 10]
    assert burst_turns(held, 1000) == 2 and held == [510, 510]
    held = [40, 0, 7, 3]
    assert burst_turns(held, 2000) == 4 and max(held) - min(held) < len(held)  # each share rounded up
    # By the margin alone (what a worker knew before it read its listener's backlog), the last
    # connections of a burst waited dozens of turns, each as long as serving all the others.
    assert burst_turns([10, 10], 1000, with_backlog=False) > 20


def test_a_gatherers_fair_share_counts_the_others_and_the_backlog_rounded_up() -> None:
    assert fair_share(10, [Peer(10, True)], 1000) == 510
    assert fair_share(3, [Peer(0, True), Peer(4, True)], 0) == 3
    assert fair_share(0, [Peer(0, True)], 1) == 1
    # Over the margin, a gatherer at its share leaves the rest of the backlog to the others.
    assert may_accept(510, 0, [Peer(10, True)], 0, LOTS, cpus=2, backlog=500) is Accept.BALANCE
    assert may_accept(509, 0, [Peer(10, True)], 0, LOTS, cpus=2, backlog=501) is Accept.YES


def test_a_gatherer_balances_against_the_other_gatherers_not_the_spares() -> None:
    assert may_accept(6, 0, board([6, 5, 0, 0], me=0), 0, LOTS, cpus=2) is Accept.YES
    assert may_accept(6, 0, board([6, 5, 0, 0], me=0), 0, LOTS, cpus=4) is Accept.BALANCE
    assert may_accept(6, 0, board([6, 5, 0, 0], me=0, blocking=(0,)), 0, LOTS, cpus=2, blocking=True) is Accept.BALANCE


@pytest.mark.parametrize(
    ("wall", "on_cpu", "runnable", "polled", "blocking"),
    [
        (0.2, 0.15, 0.04, 0.01, False),  # busy on the CPU, or waiting for it
        (0.2, 0.02, 0.0, 0.17, False),  # mostly idle in epoll wait
        (0.2, 0.03, 0.01, 0.05, True),  # asleep in its guests more than a quarter of the time
        (0.2, 0.11, 0.0, 0.05, False),  # asleep a fifth of the time: not blocking
    ],
)
def test_a_worker_blocks_when_it_sleeps_outside_its_epoll_wait(
    wall: float, on_cpu: float, runnable: float, polled: float, blocking: bool
) -> None:
    assert BLOCKING_SHARE == 0.25
    assert blocks(wall, on_cpu, runnable, polled) is blocking


def test_a_worker_out_of_descriptors_makes_room_or_leaves_new_connections_waiting() -> None:
    assert may_accept(10, 2, peers(0), bound=0, own_limit=10, cpus=LOTS) is Accept.MAKE_ROOM
    assert may_accept(10, 0, peers(0), bound=0, own_limit=10, cpus=LOTS) is Accept.FULL
    assert may_accept(9, 0, [], bound=0, own_limit=10, cpus=LOTS) is Accept.YES


def test_the_throttle_says_yes_once_per_period() -> None:
    throttle = Throttle(60.0)
    assert [throttle.due(t) for t in (100.0, 101.0, 159.9, 160.0, 161.0)] == [True, False, False, True, False]
