"""The metrics' counters: one fixed-size block of 64-bit words per scoreboard slot, and one in
the master's cumulative record.

Every label set is bounded so that a block has a fixed size in shared memory: Locations and
modules are indexes into name tables the master fills from the configuration (a name keeps its
index for the server's life, so a reload that removes a Location leaves its counters as they
were, and one that brings it back counts on from there); the method is one of four classes; a
status code is one of the registered codes or, for any other, its class ('2xx'). A worker adds
into its own slot's block with plain stores; the master folds an exited worker's block into the
cumulative one (see scoreboard.py), so the sums never go backwards.
"""

from __future__ import annotations

import bisect
import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

# Location label indexes: 0 is a request that matched no Location (or was refused before
# routing), 1 every Location beyond the table's capacity, then each prefix in order of first use.
LOCATION_LABELS = 32
NO_LOCATION, OTHER_LOCATION = 0, 1
NO_LOCATION_LABEL, OTHER_LABEL = "(none)", "(other)"  # a prefix always begins with '/'
# Module label indexes: 0 every module beyond the table's capacity, then each in order of first use.
MODULE_LABELS = 16
OTHER_MODULE = 0
NAME_BYTES = 256  # a longer Location prefix or module path counts as (other)

METHODS = ("GET", "HEAD", "POST", "other")
_METHOD_INDEX = {name: index for index, name in enumerate(METHODS[:-1])}
STATUS_CODES = tuple(sorted(s.value for s in HTTPStatus if 100 <= s.value <= 599))
STATUS_LABELS = (*(str(code) for code in STATUS_CODES), "1xx", "2xx", "3xx", "4xx", "5xx")
_STATUS_INDEX = {code: index for index, code in enumerate(STATUS_CODES)}
# Prometheus's default buckets (seconds); one more word per histogram counts above the last.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
OUTCOMES = ("ok", "exit", "trap", "timeout", "too_large", "error")
_OUTCOME_INDEX = {name: index for index, name in enumerate(OUTCOMES)}
# Why a worker was replaced: the worker counts the first itself, the master the others.
RECYCLE_REASONS = ("max_connections", "memory_soft", "memory_hard", "hung", "crash", "guest_stuck")
RELOAD_RESULTS = ("ok", "failed")

_Words = ctypes.c_uint64
_HISTOGRAM = len(BUCKETS) + 1


class Counts(ctypes.Structure):
    """Every counter, as 64-bit words (times as whole microseconds, so sums add exactly)."""

    _fields_ = [
        ("requests", _Words * (LOCATION_LABELS * len(METHODS) * len(STATUS_LABELS))),
        ("request_buckets", _Words * (LOCATION_LABELS * _HISTOGRAM)),
        ("request_micros", _Words * LOCATION_LABELS),
        ("bytes_in", _Words * LOCATION_LABELS),  # request bodies
        ("bytes_out", _Words * LOCATION_LABELS),  # response bodies sent
        ("guest_buckets", _Words * (MODULE_LABELS * _HISTOGRAM)),
        ("guest_micros", _Words * MODULE_LABELS),
        ("outcomes", _Words * (MODULE_LABELS * len(OUTCOMES))),
        ("recycles", _Words * len(RECYCLE_REASONS)),
        ("spawns", _Words * 1),  # master only
        ("reloads", _Words * len(RELOAD_RESULTS)),  # master only
    ]


WORDS = ctypes.sizeof(Counts) // 8


def at(field: str) -> int:
    """The first word of a field of Counts."""
    offset: int = getattr(Counts, field).offset
    return offset // 8


def status_index(status: int) -> int:
    index = _STATUS_INDEX.get(status)
    if index is not None:
        return index
    return len(STATUS_CODES) + min(max(status // 100, 1), 5) - 1


def bucket_index(seconds: float) -> int:
    """The histogram bucket of a duration (a bucket counts values up to its bound)."""
    return bisect.bisect_left(BUCKETS, seconds)


class Names(ctypes.Structure):
    """The label tables, written by the master before it forks the workers that use them."""

    _fields_ = [
        ("locations", (ctypes.c_char * NAME_BYTES) * LOCATION_LABELS),
        ("modules", (ctypes.c_char * NAME_BYTES) * MODULE_LABELS),
    ]


@dataclass(frozen=True, slots=True)
class LabelIndex:
    """A generation's Location prefixes and module paths, as label indexes."""

    locations: dict[str, int]
    modules: dict[str, int]

    def location(self, prefix: str | None) -> int:
        return NO_LOCATION if prefix is None else self.locations.get(prefix, OTHER_LOCATION)


def assign(names: Names, prefixes: Iterable[str], modules: Iterable[str]) -> LabelIndex:
    """Master: the index of each name, adding the new ones to the tables; a name never changes
    index, and one that does not fit counts as (other)."""
    return LabelIndex(
        {p: _index(names.locations, p, first=OTHER_LOCATION + 1, other=OTHER_LOCATION) for p in prefixes},
        {m: _index(names.modules, m, first=OTHER_MODULE + 1, other=OTHER_MODULE) for m in modules},
    )


def _index(table: ctypes.Array[ctypes.Array[ctypes.c_char]], name: str, first: int, other: int) -> int:
    encoded = name.encode("utf-8", "surrogateescape")
    if not encoded or len(encoded) >= NAME_BYTES:
        return other
    for index in range(first, len(table)):
        stored = table[index].value
        if stored == encoded:
            return index
        if not stored:
            table[index].value = encoded
            return index
    return other


class Recorder:
    """A worker's side: adds into its own slot's words (no locks; only this process writes them)."""

    def __init__(self, words: memoryview, labels: LabelIndex) -> None:
        self.words = words
        self.labels = labels

    def request(
        self, location: str | None, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        w, loc = self.words, self.labels.location(location)
        method_index = _METHOD_INDEX.get(method, len(METHODS) - 1)
        w[_REQUESTS + (loc * len(METHODS) + method_index) * len(STATUS_LABELS) + status_index(status)] += 1
        w[_REQUEST_BUCKETS + loc * _HISTOGRAM + bucket_index(seconds)] += 1
        w[_REQUEST_MICROS + loc] += max(0, round(seconds * 1e6))
        if bytes_in:
            w[_BYTES_IN + loc] += bytes_in
        if bytes_out:
            w[_BYTES_OUT + loc] += bytes_out

    def guest(self, module: str, outcome: str, seconds: float) -> None:
        w, mod = self.words, self.labels.modules.get(module, OTHER_MODULE)
        w[_GUEST_BUCKETS + mod * _HISTOGRAM + bucket_index(seconds)] += 1
        w[_GUEST_MICROS + mod] += max(0, round(seconds * 1e6))
        w[_OUTCOMES + mod * len(OUTCOMES) + _OUTCOME_INDEX[outcome]] += 1

    def recycled(self, reason: str) -> None:
        self.words[_RECYCLES + RECYCLE_REASONS.index(reason)] += 1


_REQUESTS, _REQUEST_BUCKETS, _REQUEST_MICROS = at("requests"), at("request_buckets"), at("request_micros")
_BYTES_IN, _BYTES_OUT = at("bytes_in"), at("bytes_out")
_GUEST_BUCKETS, _GUEST_MICROS, _OUTCOMES = at("guest_buckets"), at("guest_micros"), at("outcomes")
_RECYCLES = at("recycles")


def bump(words: memoryview, field: str, index: int = 0) -> None:
    """Master: one more in a master-counted field (spawns, reloads, recycles)."""
    words[at(field) + index] += 1
