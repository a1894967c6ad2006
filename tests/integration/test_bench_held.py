"""scripts/bench's held-connection figures (bench_lib/held.py) against a real server: the idle
connections it opens are all held when it measures, and its goals are judged as the report
prints them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from harness import HELLO, Server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_lib import held, report  # noqa: E402
from bench_lib.peers import System  # noqa: E402


def test_idle_connections_are_all_held_when_measured_and_judged_against_the_goal(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(HELLO + "KeepAliveTimeout 30\n", start_servers=4)
    server.wait_for_workers(lambda pids: len(pids) == 4, what="four workers")
    system = System("prefork-wasm", "prefork-wasm", "/hello", b"Hello from WebAssembly!", server.port, server.running)
    idle = held.idle_memory(system, count=200)
    assert idle["connections"] == idle["held"] == 200
    assert idle["uss_after_mb"] > 0
    crowd = {"connections": 256, "mode": "keep-alive", "rps": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0,
             "timeouts": 0}
    checks = report.targets([], [], [], held.targets({"idle": idle, "crowds": [crowd, crowd | {"errors": 3}]}))
    verdicts = {c["target"].split(" (")[0]: c["verdict"] for c in checks[-2:]}
    assert verdicts == {
        "errors at -c256 and -c1000": "MISS",
        "memory per 1,000 held idle connections": "PASS" if idle["mb_per_1000"] <= 10 else "MISS",
    }
    assert "200 kept-alive idle connections (200 held" in held.markdown({"idle": idle, "crowds": [crowd]})
