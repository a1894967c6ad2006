"""The metrics handler: the scoreboard in the Prometheus text format.

Rendered in the worker that receives the scrape, straight from shared memory (as server-status
is): the master spends nothing on a scrape. What each metric means is in docs/operations.md.
"""

from __future__ import annotations

import ctypes

from .counters import (
    BUCKETS,
    METHODS,
    NO_LOCATION,
    NO_LOCATION_LABEL,
    OTHER_LABEL,
    OTHER_LOCATION,
    OTHER_MODULE,
    OUTCOMES,
    RECYCLE_REASONS,
    RELOAD_RESULTS,
    STATUS_LABELS,
    at,
)
from .exposition import CONTENT_TYPE, Exposition
from .held import STATE_NAMES as HELD_STATES
from .messages import Request, Response
from .scoreboard import (
    CLEANUP,
    GRACEFUL,
    KEEPALIVE,
    LOGGING,
    OPEN,
    READING,
    SENDING,
    STARTING,
    WAITING,
    Scoreboard,
)

PREFIX = "prefork_wasm_"
WORKER_STATES = {
    STARTING: "starting", WAITING: "waiting", READING: "reading", SENDING: "sending",
    KEEPALIVE: "keepalive", LOGGING: "logging", GRACEFUL: "graceful", CLEANUP: "cleanup",
}
_HISTOGRAM = len(BUCKETS) + 1


class MetricsPage:
    """Implements a handler page: `started` is the master's start time (time.time())."""

    def __init__(self, scoreboard: Scoreboard, started: float) -> None:
        self.scoreboard = scoreboard
        self.started = started

    def __call__(self, request: Request) -> Response:
        return Response(200, [(b"Content-Type", CONTENT_TYPE), (b"Cache-Control", b"no-store")], self.text().encode())

    def text(self) -> str:
        board = self.scoreboard
        counts = board.counts()
        locations = _names(board.names.locations, {NO_LOCATION: NO_LOCATION_LABEL, OTHER_LOCATION: OTHER_LABEL})
        modules = _names(board.names.modules, {OTHER_MODULE: OTHER_LABEL})
        out = Exposition()
        _requests(out, counts, locations)
        _histograms(
            out, counts, "request_duration_seconds", "request_buckets", "request_micros", "location", locations,
            "Time from a request's complete head to its response sent, by Location.",
        )
        for field, name, what in (
            ("bytes_in", "request_body_bytes", "Request body bytes received"),
            ("bytes_out", "response_body_bytes", "Response body bytes sent"),
        ):
            out.family(f"{PREFIX}{name}_total", "counter", f"{what}, by Location.")
            for index, label in locations.items():
                if _used(counts, "request_buckets", index):
                    out.sample(f"{PREFIX}{name}_total", [("location", label)], counts[at(field) + index])
        _histograms(
            out, counts, "guest_duration_seconds", "guest_buckets", "guest_micros", "module", modules,
            "Time a guest ran (instantiation to exit), by module.",
        )
        out.family(PREFIX + "guest_outcomes_total", "counter", "Guest runs by how they ended, by module.")
        for index, label in modules.items():
            if index != OTHER_MODULE or _used(counts, "guest_buckets", index):
                for o, outcome in enumerate(OUTCOMES):
                    value = counts[at("outcomes") + index * len(OUTCOMES) + o]
                    out.sample(f"{PREFIX}guest_outcomes_total", [("module", label), ("outcome", outcome)], value)
        self._workers(out)
        out.family(PREFIX + "worker_spawns_total", "counter", "Workers forked since start.")
        out.sample(PREFIX + "worker_spawns_total", [], counts[at("spawns")])
        out.family(PREFIX + "worker_recycles_total", "counter", "Workers replaced, by reason.")
        for r, reason in enumerate(RECYCLE_REASONS):
            out.sample(PREFIX + "worker_recycles_total", [("reason", reason)], counts[at("recycles") + r])
        out.family(PREFIX + "generation", "gauge", "The generation being served (0 at start, +1 per restart).")
        out.sample(PREFIX + "generation", [], board.cumulative.generation)
        out.family(PREFIX + "reloads_total", "counter", "Restarts (SIGHUP, SIGUSR1) by result.")
        for r, result in enumerate(RELOAD_RESULTS):
            out.sample(PREFIX + "reloads_total", [("result", result)], counts[at("reloads") + r])
        out.family(PREFIX + "start_time_seconds", "gauge", "When the server started, in seconds since the epoch.")
        out.sample(PREFIX + "start_time_seconds", [], self.started)
        return out.text()

    def _workers(self, out: Exposition) -> None:
        slots = [s for s in self.scoreboard.slots if s.state != OPEN]
        out.family(PREFIX + "workers", "gauge", "Worker processes by scoreboard state.")
        for letter, name in WORKER_STATES.items():
            out.sample(PREFIX + "workers", [("state", name)], sum(1 for s in slots if s.state == letter))
        out.family(
            PREFIX + "held_connections", "gauge",
            "Connections the workers hold between requests, by state: reading a request head, keepalive "
            "(idle between requests), waiting (a request arrived, its worker is busy), closing.",
        )
        for name, count in zip(HELD_STATES, self.scoreboard.held(), strict=True):
            out.sample(PREFIX + "held_connections", [("state", name)], count)
        roles = self.scoreboard.roles()
        out.family(
            PREFIX + "serving_workers", "gauge",
            "Serving workers by role: gathering (they take new connections: one per CPU while the guests keep "
            "their CPU busy, every worker while they block) or spare.",
        )
        out.sample(PREFIX + "serving_workers", [("role", "gathering")], roles.gathering)
        out.sample(PREFIX + "serving_workers", [("role", "spare")], roles.spare)
        out.family(
            PREFIX + "blocking_workers", "gauge",
            "Serving workers whose guests lately slept outside their event loop (they gather without a CPU's place).",
        )
        out.sample(PREFIX + "blocking_workers", [], roles.blocking)
        out.family(
            PREFIX + "worker_memory_bytes", "gauge", "Each worker's resident memory, as last sampled by the master."
        )
        for index, slot in enumerate(self.scoreboard.slots):
            if slot.state != OPEN:
                out.sample(PREFIX + "worker_memory_bytes", [("slot", str(index)), ("pid", str(slot.pid))], slot.memory)


def _names(table: ctypes.Array[ctypes.Array[ctypes.c_char]], reserved: dict[int, str]) -> dict[int, str]:
    """Label index -> name: the reserved ones and every name the master has assigned."""
    names = dict(reserved)
    for index, entry in enumerate(table):
        value = entry.value
        if value:
            names[index] = value.decode("utf-8", "surrogateescape")
    return names


def _used(counts: list[int], buckets: str, index: int) -> bool:
    start = at(buckets) + index * _HISTOGRAM
    return any(counts[start : start + _HISTOGRAM])


def _requests(out: Exposition, counts: list[int], locations: dict[int, str]) -> None:
    out.family(
        PREFIX + "requests_total", "counter", "Requests answered, by Location (matched prefix), method and status code."
    )
    base, row = at("requests"), len(STATUS_LABELS)
    for index, label in locations.items():
        for m, method in enumerate(METHODS):
            start = base + (index * len(METHODS) + m) * row
            for s, value in enumerate(counts[start : start + row]):
                if value:
                    labels = [("location", label), ("method", method), ("code", STATUS_LABELS[s])]
                    out.sample(PREFIX + "requests_total", labels, value)


def _histograms(
    out: Exposition, counts: list[int], name: str, buckets: str, micros: str, label: str,
    names: dict[int, str], help: str,
) -> None:
    out.family(PREFIX + name, "histogram", help)
    for index, value in names.items():
        if _used(counts, buckets, index):
            start = at(buckets) + index * _HISTOGRAM
            out.histogram(
                PREFIX + name, [(label, value)], BUCKETS, counts[start : start + _HISTOGRAM],
                counts[at(micros) + index] / 1e6,
            )

