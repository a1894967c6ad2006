"""The spare-server arithmetic of Apache's prefork MPM, as a pure function.

Once a second the master counts idle workers (waiting for a connection, or still starting)
of the current generation and decides:
  - more idle than MaxSpareServers: stop one idle worker (one per second, so a brief lull
    does not tear the pool down);
  - fewer idle than MinSpareServers: spawn `spawn_rate` workers, then double the rate for
    the next second (1, 2, 4 ... 32) while the shortage lasts, never above MaxRequestWorkers
    live processes (workers still finishing a connection before they exit count too);
  - otherwise: reset the rate to 1.
When the pool is at MaxRequestWorkers and still short of idle workers, the caller logs
Apache's "server reached MaxRequestWorkers" warning, once.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SPAWN_RATE = 32


@dataclass(frozen=True, slots=True)
class SparePlan:
    spawn: int  # workers to fork now
    stop_idle: int  # idle workers to stop now (0 or 1)
    next_spawn_rate: int
    at_limit: bool  # short of idle workers but at MaxRequestWorkers


def plan(
    idle: int,
    total: int,
    *,
    min_spare: int,
    max_spare: int,
    max_workers: int,
    spawn_rate: int,
    leaving: int = 0,
) -> SparePlan:
    """One second of pool maintenance: `idle` and `total` count the current generation's pool;
    `leaving` counts the live workers outside it (recycling, or of an older generation)."""
    if idle > max_spare:
        return SparePlan(spawn=0, stop_idle=1, next_spawn_rate=1, at_limit=False)
    if idle < min_spare:
        room = max(0, max_workers - total - leaving)
        if room == 0:
            return SparePlan(spawn=0, stop_idle=0, next_spawn_rate=spawn_rate, at_limit=True)
        spawn = min(spawn_rate, room)
        return SparePlan(
            spawn=spawn, stop_idle=0, next_spawn_rate=min(spawn_rate * 2, MAX_SPAWN_RATE), at_limit=False
        )
    return SparePlan(spawn=0, stop_idle=0, next_spawn_rate=1, at_limit=False)
