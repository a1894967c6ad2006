"""server-status (mod_status): the scoreboard as an HTML page or Apache's `?auto` text.

Rendered in the worker that receives the request, straight from shared memory; the master
contributes only what it writes into the scoreboard (per-worker memory, the generation).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from . import __version__
from .held import STATE_NAMES as HELD_STATES
from .messages import Request, Response
from .scoreboard import (
    BUSY_STATES,
    LOGGING,
    OPEN,
    READING,
    SENDING,
    STARTING,
    WAITING,
    Roles,
    Scoreboard,
    Slot,
)

# Apache event MPM's names for its asynchronous connections, by held state.
# ConnsAsyncHandshake is this server's own: Apache's event MPM does a TLS handshake in a worker.
HELD_FIELDS = (
    "ConnsAsyncReading", "ConnsAsyncKeepAlive", "ConnsAsyncWaiting", "ConnsAsyncClosing", "ConnsAsyncHandshake"
)
IN_FLIGHT = frozenset({READING, SENDING, LOGGING})

STATE_NAMES = {
    b"_": "waiting", b"S": "starting", b"R": "reading", b"W": "sending reply", b"K": "keepalive",
    b"L": "logging", b"G": "gracefully finishing", b"I": "idle cleanup", b".": "open slot",
}


@dataclass(slots=True)
class Totals:
    accesses: int
    kbytes: float
    busy: int
    idle: int
    letters: str
    held: list[int]  # connections held by the workers, by state (held.STATE_NAMES)
    in_flight: int  # connections whose request a worker is serving
    roles: Roles


def totals(scoreboard: Scoreboard) -> Totals:
    """Accesses and traffic since start (workers gone included: they never go backwards)."""
    slots = scoreboard.slots
    counters = scoreboard.counters()
    busy = sum(1 for s in slots if s.state in BUSY_STATES)
    idle = sum(1 for s in slots if s.state == WAITING)
    letters = "".join(s.state.decode() or "." for s in slots)
    in_flight = sum(1 for s in slots if s.state in IN_FLIGHT)
    return Totals(
        counters.accesses, counters.bytes / 1024, busy, idle, letters, scoreboard.held(), in_flight, scoreboard.roles()
    )


def role(slot: Slot) -> str:
    """A serving worker's part in taking connections (held.gatherers); blank for the others."""
    if not slot.serves():
        return ""
    return ("spare" if slot.spare else "gathers") + (", guests block" if slot.blocking else "")


def _uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    larger = ((days, "days"), (hours, "hours"), (minutes, "minutes"))
    return " ".join(f"{n} {unit}" for n, unit in larger if n) + f" {s} seconds"


class StatusPage:
    """Renders the page; `started` and `generation` are the master's at the worker's fork."""

    def __init__(self, scoreboard: Scoreboard, started: float, generation: int, server_name: str) -> None:
        self.scoreboard = scoreboard
        self.started = started
        self.generation = generation
        self.server_name = server_name

    def __call__(self, request: Request) -> Response:
        if request.query.split("&")[0] == "auto":
            return Response(200, [(b"Content-Type", b"text/plain; charset=ISO-8859-1")], self.auto().encode())
        return Response(200, [(b"Content-Type", b"text/html; charset=ISO-8859-1")], self.html().encode())

    def auto(self) -> str:
        slots = self.scoreboard.slots
        t = totals(self.scoreboard)
        uptime = max(1, int(time.time() - self.started))
        lines = [
            f"{self.server_name}",
            f"ServerVersion: prefork-wasm/{__version__}",
            "ServerMPM: prefork",
            f"ServerUptimeSeconds: {uptime}",
            f"ServerUptime: {_uptime(uptime)}",
            f"Generation: {self.generation}",
            f"Total Accesses: {t.accesses}",
            f"Total kBytes: {int(t.kbytes)}",
            f"Uptime: {uptime}",
            f"ReqPerSec: {t.accesses / uptime:.6g}",
            f"BytesPerSec: {t.kbytes * 1024 / uptime:.6g}",
            f"BytesPerReq: {(t.kbytes * 1024 / t.accesses) if t.accesses else 0:.6g}",
            f"BusyWorkers: {t.busy}",
            f"IdleWorkers: {t.idle}",
            f"Processes: {sum(1 for s in slots if s.state != OPEN)}",
            f"ConnsTotal: {sum(t.held) + t.in_flight}",
            *(f"{name}: {count}" for name, count in zip(HELD_FIELDS, t.held, strict=True)),
            f"GatheringWorkers: {t.roles.gathering}",
            f"SpareWorkers: {t.roles.spare}",
            f"BlockingWorkers: {t.roles.blocking}",
            f"Scoreboard: {t.letters}",
        ]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        slots = self.scoreboard.slots
        t = totals(self.scoreboard)
        now = time.time()
        uptime = max(1, int(now - self.started))
        rows = []
        for index, s in enumerate(slots):
            if s.state == OPEN:
                continue
            ago = now - s.request_start if s.request_start else 0
            rows.append(
                "<tr>" + "".join(
                    f"<td>{html.escape(str(cell))}</td>"
                    for cell in (
                        index, s.pid, s.generation, s.state.decode(), s.accesses, s.connections,
                        "/".join(map(str, s.held)), role(s),
                        f"{s.bytes / 1024:.1f}", f"{s.memory / 1048576:.1f}", f"{ago:.1f}",
                        s.module.decode("utf-8", "replace"),
                        s.request.decode("latin-1") if s.state not in (STARTING,) else "",
                    )
                ) + "</tr>"
            )
        held = ", ".join(f"{count} {name}" for name, count in zip(HELD_STATES, t.held, strict=True))
        legend = ", ".join(f'"<b><code>{k.decode()}</code></b>" {v}' for k, v in STATE_NAMES.items())
        return f"""<!DOCTYPE html>
<html><head><title>Server Status for {html.escape(self.server_name)}</title></head><body>
<h1>Server Status for {html.escape(self.server_name)}</h1>
<dl><dt>Server Version: prefork-wasm/{__version__}</dt>
<dt>Server MPM: prefork</dt>
<dt>Current Time: {time.strftime("%A, %d-%b-%Y %H:%M:%S %Z", time.localtime(now))}</dt>
<dt>Restart Time: {time.strftime("%A, %d-%b-%Y %H:%M:%S %Z", time.localtime(self.started))}</dt>
<dt>Generation: {self.generation}</dt>
<dt>Server uptime: {_uptime(uptime)}</dt>
<dt>Total accesses: {t.accesses} - Total Traffic: {t.kbytes:.1f} kB</dt>
<dt>{t.accesses / uptime:.3g} requests/sec</dt>
<dt>{t.busy} requests currently being processed, {t.idle} idle workers</dt>
<dt>{sum(t.held)} connections held: {held}</dt>
<dt>{t.roles.gathering} workers gather connections, {t.roles.spare} spare; guests block in {t.roles.blocking}</dt></dl>
<pre>{t.letters}</pre>
<p>Scoreboard Key: {legend}</p>
<table border="1"><tr><th>Slot</th><th>PID</th><th>Gen</th><th>M</th><th>Acc</th><th>Conn</th>
<th>Held {"/".join(HELD_STATES)}</th><th>Role</th>
<th>kB</th><th>RSS MB</th><th>Req age s</th><th>Module</th><th>Request</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
