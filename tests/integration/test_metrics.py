"""SetHandler metrics and SetHandler health against the real server (issue 12): the scrape read
by the official Prometheus parser, its counters exact for a known sequence of requests and
never lower across recycles and restarts; health 200 while serving, 503 while a graceful stop
drains."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from harness import EXAMPLES, HELLO, MODULES, Server, wait_for
from test_supervision import SLOW, _ignore_errors, busy_worker

METRICS = """
<Location /metrics>
    SetHandler metrics
    Require local
</Location>
<Location /private-metrics>
    SetHandler metrics
    Require ip 192.0.2.0/24
</Location>
<Location /health>
    SetHandler health
</Location>
<Location /trap>
    SetHandler wasm-handler
    WasmModule ${MODULES}/trap.wasm
</Location>
<Location /loop>
    SetHandler wasm-handler
    WasmModule ${MODULES}/loop.wasm
    WasmTimeout 1
</Location>
"""

# Only the metrics Location: no guest of a longer WasmTimeout lengthens the hung-worker limit.
METRICS_ONLY = METRICS[: METRICS.index("<Location /private-metrics>")]
HELLO_WASM, TRAP_WASM, LOOP_WASM = (
    str(EXAMPLES / "hello.wasm"),
    str(MODULES / "trap.wasm"),
    str(MODULES / "loop.wasm"),
)
Key = tuple[str, frozenset[tuple[str, str]]]


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def requests(location: str, method: str, code: str) -> Key:
    return key("prefork_wasm_requests_total", location=location, method=method, code=code)


def outcomes(module: str, outcome: str) -> Key:
    return key("prefork_wasm_guest_outcomes_total", module=module, outcome=outcome)


# Every sample of these kinds is a running total: no scrape may show one lower than before.
MONOTONIC = ("_total", "_bucket", "_count", "_sum")


class Scrapes:
    """Reads /metrics with the official parser and checks, on every read, that no counter went
    back. A worker counts a request just after sending it, so an exact figure is polled for."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.last: dict[Key, float] = {}

    def read(self) -> dict[Key, float]:
        status, headers, body, _ = self.server.get("/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        found = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        for name, value in self.last.items():
            if name[0].endswith(MONOTONIC):
                assert found.get(name, 0) >= value, f"{name} went back from {value} to {found.get(name)}"
        self.last = found
        return found

    def expect(self, expected: dict[Key, float], after: str) -> dict[Key, float]:
        """Poll until every expected sample has its value (a missing one counts as 0)."""
        seen: dict[Key, float] = {}

        def matches() -> bool:
            nonlocal seen
            seen = self.read()
            return all(seen.get(k, 0) == v for k, v in expected.items())

        try:
            wait_for(matches, what=f"the expected metrics {after}")
        except AssertionError:
            wrong = {k: (seen.get(k, 0), v) for k, v in expected.items() if seen.get(k, 0) != v}
            raise AssertionError(f"{after}: (seen, expected) {wrong}") from None
        return seen


def test_metrics_count_a_known_sequence_exactly_across_recycles_and_a_graceful_restart(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(HELLO + METRICS + "MaxConnectionsPerChild 4\n")
    scrapes = Scrapes(server)
    first_workers = server.worker_pids()
    hello = server.get("/hello")[2]
    for _ in range(4):
        assert server.get("/hello")[0] == 200
    assert server.request("POST", "/hello", body=b"x" * 10)[0] == 200
    assert server.request("HEAD", "/hello")[0] == 200
    for path in ("/missing", "/missing/x", "/hello-not"):
        assert server.get(path)[0] == 404
    for _ in range(2):
        assert server.get("/trap")[0] == 500
    assert server.get("/loop")[0] == 504
    expected = {
        requests("/hello", "GET", "200"): 5,
        requests("/hello", "POST", "200"): 1,
        requests("/hello", "HEAD", "200"): 1,
        requests("(none)", "GET", "404"): 3,
        requests("/trap", "GET", "500"): 2,
        requests("/loop", "GET", "504"): 1,
        outcomes(HELLO_WASM, "ok"): 7,
        outcomes(TRAP_WASM, "trap"): 2,
        outcomes(TRAP_WASM, "ok"): 0,
        outcomes(LOOP_WASM, "timeout"): 1,
        key("prefork_wasm_guest_duration_seconds_count", module=HELLO_WASM): 7,
        key("prefork_wasm_request_duration_seconds_count", location="/hello"): 7,
        key("prefork_wasm_request_body_bytes_total", location="/hello"): 10,
        key("prefork_wasm_response_body_bytes_total", location="/hello"): 6 * len(hello),  # HEAD sends none
        key("prefork_wasm_generation"): 0,
        key("prefork_wasm_reloads_total", result="ok"): 0,
    }
    scrapes.expect(expected, "after the sequence")
    # 14 connections and the scrapes on 2 workers with MaxConnectionsPerChild 4: workers were
    # recycled, and each recycle is counted once. A scrape is a connection too, so the count is
    # compared while no recycle happens around the scrape (a worker logs, then counts).
    assert not first_workers & server.worker_pids()

    def recycles_match_the_log() -> bool:
        """And each recycled worker was replaced by one spawn."""
        before = server.log().count("recycling after 4 connections")
        seen = scrapes.read()
        after = server.log().count("recycling after 4 connections")
        recycled = seen[key("prefork_wasm_worker_recycles_total", reason="max_connections")]
        spawns = seen[key("prefork_wasm_worker_spawns_total")]
        return before == after == recycled >= 2 and spawns == 2 + recycled

    wait_for(recycles_match_the_log, what="one max_connections recycle counted per recycle logged")
    assert scrapes.last[key("prefork_wasm_worker_recycles_total", reason="crash")] == 0
    spawned = scrapes.last[key("prefork_wasm_worker_spawns_total")]
    assert server.get("/private-metrics")[0] == 403  # Require applies to it as to server-status

    # A restart that fails counts as failed, and generation 0 serves on.
    server.write_config(HELLO + METRICS + "WasmModule /nonexistent.wasm\n")
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "graceful restart failed" in server.log(), what="the failed restart")
    expected[key("prefork_wasm_reloads_total", result="failed")] = 1
    scrapes.expect(expected, "after a failed restart")

    # Generation 1: /loop is gone and /again is new (/loop's counters keep theirs; /again's
    # start at zero), and workers no longer recycle, so that the one killed below crashes.
    without_loop = METRICS[: METRICS.index("<Location /loop>")]
    server.write_config(HELLO + without_loop + HELLO.replace("<Location /hello>", "<Location /again>"))
    old = server.worker_pids()
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 1 configured" in server.log(), what="generation 1")
    server.wait_for_workers(lambda pids: len(pids) == 2 and not old & pids, what="the new generation")
    for _ in range(2):
        assert server.get("/hello")[0] == 200
    assert server.get("/again")[0] == 200
    assert server.get("/loop")[0] == 404
    assert server.get("/health")[0] == 200  # a graceful restart never stops serving
    expected.update({
        requests("/hello", "GET", "200"): 7,
        key("prefork_wasm_request_duration_seconds_count", location="/hello"): 9,
        key("prefork_wasm_response_body_bytes_total", location="/hello"): 8 * len(hello),
        key("prefork_wasm_generation"): 1,
        key("prefork_wasm_reloads_total", result="ok"): 1,
        requests("/health", "GET", "200"): 1,
        requests("/again", "GET", "200"): 1,
        requests("(none)", "GET", "404"): 4,
        outcomes(HELLO_WASM, "ok"): 10,
        key("prefork_wasm_guest_duration_seconds_count", module=HELLO_WASM): 10,
    })
    seen = scrapes.expect(expected, "after a graceful restart")
    spawns = key("prefork_wasm_worker_spawns_total")
    assert seen[spawns] >= spawned + 2  # the new generation's workers

    victim = next(iter(server.worker_pids()))
    os.kill(victim, signal.SIGKILL)
    server.wait_for_workers(lambda pids: len(pids) == 2 and victim not in pids, what="a replacement")
    expected[key("prefork_wasm_worker_recycles_total", reason="crash")] = 1
    scrapes.expect(expected, "after a worker was killed")
    # The master counts a spawn just after its fork: the replacement may be seen a moment before.
    wait_for(lambda: scrapes.read()[spawns] >= seen[spawns] + 1, what="the replacement's spawn counted")


def test_health_is_200_while_serving_and_503_while_a_graceful_stop_drains(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(SLOW + "<Location /health>\n    SetHandler health\n</Location>\nKeepAliveTimeout 60\n")
    # A kept-alive connection holds one worker; the slow request then goes to the other.
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    probe.request("GET", "/health")
    ready = probe.getresponse()
    assert ready.status == 200 and ready.read() == b"ready (generation 0)\n"
    result: dict[str, object] = {}
    client = threading.Thread(target=lambda: result.update(slow=server.get("/slow?3000")))
    client.start()
    try:
        wait_for(lambda: busy_worker(server), what="the slow request in flight")
        server.signal(signal.SIGWINCH)
        wait_for(lambda: "shutting down gracefully" in server.log(), what="the graceful stop")
        probe.request("GET", "/health")
        stopping = probe.getresponse()
        assert stopping.status == 503 and stopping.read() == b"stopping (generation 0)\n"
        assert server.proc is not None and server.proc.poll() is None  # still draining
    finally:
        client.join(timeout=30)
        probe.close()
    status, _, body, _ = result["slow"]  # type: ignore[misc]
    assert status == 200 and body == b"slept 3000 ms\n"
    assert server.proc is not None and server.proc.wait(timeout=10) == 0


HOSTILE_TARGETS = [
    "/private-metrics/", "//private-metrics", "/x/../private-metrics", "/%2e%2e/private-metrics",
    "/private-metrics/%2e%2e/private-metrics", "/./private-metrics", "/private-metrics%2f", "/private-metrics%00",
    "http://localhost/private-metrics", "/private-metrics/" + "a" * 4000, "/%70rivate-metrics",
]


def test_hostile_paths_neither_pass_require_nor_make_new_labels(make_server: Callable[..., Server]) -> None:
    """Require on a metrics Location holds for every spelling of its path, and no request path
    becomes a label: `location` is always a configured prefix or (none)."""
    server = make_server(HELLO + METRICS)
    for target in HOSTILE_TARGETS:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            status = int(sock.recv(64).split(b" ", 2)[1])
        assert status in (400, 403, 404), f"{target}: {status}"
    assert server.get("/x/%2e%2e/hello")[0] == 200  # normalised into /hello, and counted there
    found = Scrapes(server).expect({requests("/hello", "GET", "200"): 1}, "after hostile requests")
    locations = {dict(labels).get("location") for _, labels in found} - {None}
    assert locations <= {"(none)", "/hello", "/metrics", "/private-metrics"}, locations


def recycle_counts_match_the_log(server: Server, reason: str, logged: str) -> None:
    """Poll until the master's count of `reason` equals the log lines saying `logged`, read
    before and after the scrape with no new line between (the master logs, then counts)."""

    def matches() -> bool:
        before = server.log().count(logged)
        seen = Scrapes(server).read()
        after = server.log().count(logged)
        return before == after == seen[key("prefork_wasm_worker_recycles_total", reason=reason)] >= 1

    wait_for(matches, timeout=20, what=f"one {reason} recycle counted per '{logged}' logged")


def test_a_hung_worker_is_counted_as_hung(make_server: Callable[..., Server]) -> None:
    server = make_server(
        SLOW.replace("WasmEnableCGI On", "WasmEnableCGI On\n    WasmTimeout 1") + METRICS_ONLY + "Timeout 1\n"
    )
    client = threading.Thread(target=lambda: _ignore_errors(lambda: server.get("/slow?3000", timeout=10)))
    client.start()
    busy = wait_for(lambda: busy_worker(server), what="a busy worker")
    os.kill(busy, signal.SIGSTOP)  # frozen outside any guest: only its heartbeat tells
    server.wait_for_workers(lambda pids: busy not in pids and len(pids) == 2, what="a replacement")
    client.join(timeout=10)
    recycle_counts_match_the_log(server, "hung", "has shown no sign of life")


def test_workers_above_the_soft_memory_limit_are_counted(make_server: Callable[..., Server]) -> None:
    server = make_server(SLOW + METRICS_ONLY + "MaxMemoryPerChild 1M\nMemoryMetric rss\n")
    first = server.worker_pids()
    wait_for(lambda: server.get("/hello")[0] == 200 and not first & server.worker_pids(), timeout=30,
             what="every first worker recycled")
    recycle_counts_match_the_log(server, "memory_soft", "recycling after its current connection")
