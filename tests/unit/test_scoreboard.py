"""The scoreboard's totals (prefork_wasm.scoreboard), without processes."""

from __future__ import annotations

from prefork_wasm.scoreboard import HAND_OVER, OPEN, SERVE, Counters, Roles, Scoreboard


def test_a_released_slot_keeps_counting_in_the_totals_and_is_reusable() -> None:
    board = Scoreboard(2)
    a, b = board.slots
    a.claim(100, 0)
    b.claim(101, 0)
    a.accesses, a.bytes = 5, 500
    b.accesses, b.bytes = 2, 20
    assert board.counters() == Counters(7, 520)
    board.release(0)
    assert a.state == OPEN and a.accesses == 0
    assert board.counters() == Counters(7, 520)
    a.claim(102, 1)
    a.accesses, a.bytes = 1, 1
    assert board.counters() == Counters(8, 521)
    assert board.cumulative.sequence % 2 == 0


def test_held_connections_are_summed_by_state_over_live_slots() -> None:
    board = Scoreboard(3)
    a, b, _ = board.slots
    a.claim(100, 0)
    b.claim(101, 0)
    a.held[:] = [1, 2, 3, 4, 5]
    b.held[:] = [10, 0, 0, 1, 2]
    assert board.held() == [11, 2, 3, 5, 7]
    board.release(1)
    assert board.held() == [1, 2, 3, 4, 5]  # a worker gone holds nothing: its connections went with it


def test_the_states_of_every_slot_are_read_in_one_step() -> None:
    board = Scoreboard(5)
    board.slots[1].claim(101, 0)
    board.slots[3].claim(103, 0)
    board.slots[3].state = b"W"
    assert board.states() == b".S.W."


def test_roles_count_the_serving_workers_only() -> None:
    board = Scoreboard(6)
    for index in range(5):
        board.slots[index].claim(100 + index, 0)
    gatherer, spare, sleeper, starting, leaving = board.slots[:5]
    gatherer.state, spare.state, sleeper.state, leaving.state = b"_", b"_", b"W", b"_"
    spare.spare = True
    sleeper.blocking = True  # its guests sleep: it gathers without a CPU's place
    starting.spare = True  # still 'S': not counted
    leaving.quit = HAND_OVER  # leaving: not counted, whatever it said before
    assert board.roles() == Roles(gathering=2, spare=1, blocking=1)
    leaving.quit = SERVE
    assert board.roles() == Roles(gathering=3, spare=1, blocking=1)
