"""The spare-server arithmetic (prefork_wasm.spares), without processes."""

from __future__ import annotations

import pytest

from prefork_wasm.spares import MAX_SPAWN_RATE, SparePlan, plan

LIMITS = dict(min_spare=2, max_spare=4, max_workers=8)


def test_within_bounds_does_nothing_and_resets_rate() -> None:
    assert plan(3, 5, spawn_rate=8, **LIMITS) == SparePlan(0, 0, 1, False)


def test_too_many_idle_stops_exactly_one() -> None:
    assert plan(7, 7, spawn_rate=4, **LIMITS) == SparePlan(0, 1, 1, False)


def test_shortage_spawns_at_doubling_rate_up_to_32() -> None:
    rate, spawned = 1, []
    for _ in range(8):
        p = plan(0, 0, spawn_rate=rate, min_spare=100, max_spare=200, max_workers=10_000)
        spawned.append(p.spawn)
        rate = p.next_spawn_rate
    assert spawned == [1, 2, 4, 8, 16, 32, 32, 32]
    assert rate == MAX_SPAWN_RATE


def test_spawn_never_exceeds_max_workers() -> None:
    p = plan(0, 7, spawn_rate=16, **LIMITS)
    assert p.spawn == 1 and not p.at_limit


def test_workers_still_leaving_hold_their_place_under_max_workers() -> None:
    assert plan(0, 5, spawn_rate=4, leaving=2, **LIMITS).spawn == 1
    p = plan(0, 6, spawn_rate=4, leaving=2, **LIMITS)
    assert p.spawn == 0 and p.at_limit


def test_at_max_workers_reports_limit_and_spawns_nothing() -> None:
    p = plan(0, 8, spawn_rate=4, **LIMITS)
    assert p.spawn == 0 and p.at_limit
    assert p.next_spawn_rate == 4  # the shortage lasts; keep the rate


@pytest.mark.parametrize("idle, total", [(2, 2), (4, 8), (2, 8)])
def test_at_the_bounds_is_steady(idle: int, total: int) -> None:
    assert plan(idle, total, spawn_rate=2, **LIMITS) == SparePlan(0, 0, 1, False)


def test_simulated_pool_grows_then_shrinks_one_per_second() -> None:
    """Drive the plan like the master does, with every worker busy, then all idle."""
    total, busy, rate = 2, 0, 1
    history = []
    for second in range(12):
        busy = total if second < 6 else 0  # a burst of slow requests, then quiet
        p = plan(total - busy, total, spawn_rate=rate, **LIMITS)
        total += p.spawn - p.stop_idle
        rate = p.next_spawn_rate
        history.append(total)
    assert max(history) == 8  # grew to MaxRequestWorkers, never above
    assert history[:4] == [3, 5, 8, 8]
    shrink = history[6:]
    assert all(a - b in (0, 1) for a, b in zip(shrink, shrink[1:], strict=False))  # one per second
    assert history[-1] == 4  # back to MaxSpareServers
