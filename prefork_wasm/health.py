"""The health handler: readiness (and, with `?live`, liveness) for load balancers and
Kubernetes probes, from the phase the master writes into the scoreboard.

Ready (200) while a generation serves, graceful restarts included (the new generation serves
while the old one drains); not ready (503) once the server is stopping, gracefully or not, so
a balancer stops sending new work while the requests in flight finish. Live (200) whenever a
worker answers at all.
"""

from __future__ import annotations

from .messages import Request, Response
from .scoreboard import SERVING, STOPPING, Scoreboard

_PHASES = {SERVING: "ready", STOPPING: "stopping"}


class HealthPage:
    def __init__(self, scoreboard: Scoreboard) -> None:
        self.scoreboard = scoreboard

    def __call__(self, request: Request) -> Response:
        record = self.scoreboard.cumulative
        phase = _PHASES.get(record.phase, "starting")
        live = request.query.split("&")[0] == "live"
        ok = live or record.phase == SERVING
        body = f"{'live, ' if live else ''}{phase} (generation {record.generation})\n".encode()
        headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Cache-Control", b"no-store")]
        return Response(200 if ok else 503, headers, body)
