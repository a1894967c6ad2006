"""scripts/restart-chaos: restarts under load. A prefork-wasm server on 127.0.0.1 serves hello
to wrk (keep-alive) while it is sent SIGHUP (restart now) or SIGUSR1 (graceful restart) at a
fixed interval; reports the failed requests (wrk's socket errors plus non-2xx answers) per
1,000 requests, and the generations reached. A restart may lose only the requests in flight
(HUP) or none (USR1): every connection a worker holds between requests goes on in the next
generation.

Run through scripts/restart-chaos (sets up .venv, installs wrk). Every process is started here
and stopped by pid. The last line printed is the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import HELLO, HOST, Server

from . import wrk

SIGNALS = {"hup": signal.SIGHUP, "usr1": signal.SIGUSR1}
DEFAULT_EVERY = {"hup": 5.0, "usr1": 2.0}
# The acceptance bounds: at most this many failed requests per 1,000.
BOUND = {"hup": 0.12, "usr1": 0.0}


def log(msg: str) -> None:
    print(f"restart-chaos: {msg}", flush=True)


def generation(server: Server) -> int:
    for line in reversed(server.log().splitlines()):
        if "generation " in line and "configured -- resuming normal operations" in line:
            return int(line.split("generation ", 1)[1].split()[0])
    return 0


def run(mode: str, seconds: float, every: float, connections: int, workers: int, root: Path) -> dict[str, Any]:
    """One wrk run of `seconds` while the server gets SIGNALS[mode] every `every` seconds."""
    (root / mode).mkdir(parents=True)
    server = Server(root / mode, HELLO, start_servers=workers, log_level="notice")
    server.start()
    try:
        wrk.run(f"http://{HOST}:{server.port}/hello", connections, 2, close=False)  # warm up
        stop = threading.Event()
        sent = [0]

        def signals() -> None:
            while not stop.wait(every):
                server.signal(SIGNALS[mode])
                sent[0] += 1

        thread = threading.Thread(target=signals, daemon=True)
        thread.start()
        try:
            result = wrk.run(f"http://{HOST}:{server.port}/hello", connections, seconds, close=False)
        finally:
            stop.set()
            thread.join()
        time.sleep(1)
        return {
            "mode": mode,
            "signal": SIGNALS[mode].name,
            "every_s": every,
            "signals": sent[0],
            "generations": generation(server),
            "requests": result["requests"],
            "rps": round(result["rps"]),
            "errors": result["errors"],
            "socket_errors": result["socket_errors"],
            "status_errors": result["status_errors"],
            "per_1000": round(1000 * result["errors"] / max(result["requests"], 1), 4),
            "bound_per_1000": BOUND[mode],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="hup,usr1", help="comma-separated: hup, usr1 (default both)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load per mode (default 60)")
    parser.add_argument("--every", type=float, help="seconds between signals (default: hup 5, usr1 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    parser.add_argument("--workers", type=int, default=4, help="StartServers (default 4)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="restart-chaos-") as tmp:
        for mode in args.modes.split(","):
            every = args.every or DEFAULT_EVERY[mode]
            log(f"{mode}: {args.seconds:g} s of wrk -c{args.connections}, {SIGNALS[mode].name} every {every:g} s")
            result = run(mode, args.seconds, every, args.connections, args.workers, Path(tmp))
            log(
                f"{mode}: {result['errors']} failed of {result['requests']} requests = "
                f"{result['per_1000']} per 1,000 (bound {result['bound_per_1000']}), {result['signals']} signals, "
                f"generation {result['generations']} reached, {result['rps']} req/s"
            )
            results.append(result)
    print(json.dumps(results), flush=True)
    return 0 if all(r["per_1000"] <= r["bound_per_1000"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
