"""RequestReadTimeout, as Apache's mod_reqtimeout: per-phase read deadlines that a trickling
client cannot stretch, while a slow but steady one may (pure: no clock, no socket).

Each phase (reading the head, reading the body) gets `timeout` seconds to start with; every
`min_rate` bytes received add one second, up to `max_timeout` seconds from the phase's start.
`Timeout` still bounds the phase as a whole, so the deadline is the earlier of the two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadTimeout:
    """One phase of RequestReadTimeout: `header=timeout[-max_timeout][,MinRate=min_rate]`."""

    timeout: int = 0  # seconds to start with; 0 = this phase has no RequestReadTimeout
    max_timeout: int = 0  # the cap the rate may extend to; 0 = no cap
    min_rate: int = 0  # bytes per second that earn one more second; 0 = no extension

    def __str__(self) -> str:
        text = f"{self.timeout}-{self.max_timeout}" if self.max_timeout else str(self.timeout)
        return f"{text},MinRate={self.min_rate}" if self.min_rate else text


# mod_reqtimeout's defaults (Apache 2.4.39 and later), in force without the directive.
HEADER_DEFAULT = ReadTimeout(20, 40, 500)
BODY_DEFAULT = ReadTimeout(20, 0, 500)
# handshake=: a TLS handshake's phase, which Apache leaves off by default; on here, so that a
# client that never finishes one is cut without any directive.
HANDSHAKE_DEFAULT = ReadTimeout(20)

_VALUE = re.compile(r"([0-9]+)(?:-([0-9]+))?(?:,minrate=([0-9]+))?", re.IGNORECASE)


def parse_phase(text: str) -> ReadTimeout:
    """'20-40,MinRate=500' -> ReadTimeout(20, 40, 500), with mod_reqtimeout's checks."""
    match = _VALUE.fullmatch(text)
    if not match:
        raise ValueError(f"expected timeout[-maxtimeout][,MinRate=rate] in whole seconds and bytes, got {text!r}")
    timeout, max_timeout, rate = (int(group or 0) for group in match.groups())
    if match[2] is not None and max_timeout <= timeout:
        raise ValueError(f"the maximum timeout must be larger than the initial one in {text!r}")
    if max_timeout and not rate:
        raise ValueError(f"a timeout range needs MinRate=bytes-per-second in {text!r}")
    if match[3] is not None and not rate:
        raise ValueError(f"MinRate must be > 0 in {text!r}")
    return ReadTimeout(timeout, max_timeout, rate)


class Deadline:
    """When reading one phase must end: `timeout` (Timeout) after `start`, or earlier by the
    phase's RequestReadTimeout, whose deadline moves later as bytes arrive (times are
    time.monotonic() seconds)."""

    __slots__ = ("_cap", "_hard", "_rate", "_soft")

    def __init__(self, start: float, timeout: float, rule: ReadTimeout) -> None:
        self._hard = start + timeout
        self._soft = start + rule.timeout if rule.timeout else float("inf")
        self._cap = start + rule.max_timeout if rule.max_timeout else float("inf")
        self._rate = float(rule.min_rate if rule.timeout else 0)

    def received(self, count: int) -> None:
        """`count` more bytes arrived: one more second per MinRate bytes, up to the cap."""
        if self._rate:
            self._soft = min(self._soft + count / self._rate, self._cap)

    def saved(self) -> tuple[float, float, float, float]:
        """What the deadline is made of, for another process to go on with it (`restored`):
        times are CLOCK_MONOTONIC, the same in every process of the machine."""
        return self._hard, self._soft, self._cap, self._rate

    @classmethod
    def restored(cls, saved: Sequence[float]) -> Deadline:
        deadline = cls.__new__(cls)
        deadline._hard, deadline._soft, deadline._cap, deadline._rate = saved
        return deadline

    @property
    def at(self) -> float:
        return min(self._hard, self._soft)

    @property
    def limit(self) -> str:
        """The directive that sets the deadline now, for the 408's explanation."""
        return "RequestReadTimeout" if self._soft < self._hard else "Timeout"
