"""Soak test: run a real prefork-wasm server under steady load plus hostile clients for minutes,
then report what leaked, failed or restarted. Started by `scripts/soak` (which sets up .venv).

    scripts/soak [--minutes N] [--clients C] [--hostile H] [--keep]

Everything listens and connects on 127.0.0.1 only; every thread, socket and wait is bounded;
the only processes ended are the server this program started and the workers it was seen to
fork, by pid, through the harness the test suite and the benchmark share (tests/harness.py).
Exit status: 0 if no well-behaved request failed, the master's RSS grew by less than
RSS_GROWTH_LIMIT, the server exited 0 on SIGTERM and left no worker behind; else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness import EXAMPLES, HOST, MODULES, STOP_GRACE, Server, Stopped, WaitFailed

TIMEOUT = 5  # the server's Timeout: a slowloris is cut (408) after this many seconds
WASM_TIMEOUT = 2  # the server's WasmTimeout: /loop answers 504 after this many seconds
START_SERVERS = 4
RSS_GROWTH_LIMIT = 5 << 20  # bytes the master may grow by over the run
PID_POLL = 0.5  # seconds between worker-pid samples (short-lived workers can still be missed)
FULL_SAMPLE = 5.0  # seconds between master-RSS and server-status samples
MAX_EXAMPLES = 8  # failure examples kept per category
CLOSE_EVERY = 4  # a well-behaved client ends its connection every n-th request (new connections
# are what MaxConnectionsPerChild counts: this makes workers recycle within minutes)
HELLO_BODY = b"Hello from WebAssembly!\n"
BIG_OUTPUT = 4 << 20  # what /headers?big writes


# --- options and config ---------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    minutes: float = 3.0
    clients: int = 8
    hostile: int = 2
    keep: bool = False


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=Options.minutes, help="load duration (default 3)")
    parser.add_argument("--clients", type=int, default=Options.clients, help="well-behaved client threads (default 8)")
    parser.add_argument("--hostile", type=int, default=Options.hostile, help="hostile client threads (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (it is kept on failure anyway)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be above 0 and at most 1440")
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be 1 to 64")
    if not 0 <= args.hostile <= 32:
        parser.error("--hostile must be 0 to 32")
    return Options(args.minutes, args.clients, args.hostile, args.keep)


def location(path: str, module: Path) -> str:
    return f"""<Location {path}>
    SetHandler wasm-handler
    WasmModule "{module}"
    WasmEnableCGI On
</Location>
"""


def config_body(max_workers: int) -> str:
    """A dynamic pool with small limits, so recycling by memory and by connections and every
    guest failure mode happen within minutes (after the harness's head: later directives win).
    Prefork serves one connection per worker, so MaxRequestWorkers is raised above the number
    of client threads: keep-alive clients beyond it would only queue, which would measure the
    test rather than the server."""
    locations = [
        ("/hello", EXAMPLES / "hello.wasm"),
        ("/echo", EXAMPLES / "echo.wasm"),
        ("/slow", MODULES / "slow.wasm"),
        ("/trap", MODULES / "trap.wasm"),
        ("/loop", MODULES / "loop.wasm"),
        ("/membomb", MODULES / "membomb.wasm"),
        ("/headers", MODULES / "headers.wasm"),
    ]
    return f"""# Written by scripts/soak for one run.
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers {max_workers}
MaxConnectionsPerChild 500
MaxMemoryPerChild 64M
Timeout {TIMEOUT}
KeepAliveTimeout 2
WasmTimeout {WASM_TIMEOUT}
WasmMemoryLimit 64M
LimitRequestBody 1M
{"".join(location(path, module) for path, module in locations)}
<Location /server-status>
    SetHandler server-status
    Require local
</Location>
"""


# --- shared tallies -------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts from every client thread (one lock: the counts are updated from many threads)."""

    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    hostile: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)
    hostile_examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def success(self) -> None:
        with self.lock:
            self.ok += 1

    def failure(self, what: str) -> None:
        with self.lock:
            self.failed += 1
            if len(self.failures) < MAX_EXAMPLES:
                self.failures.append(f"t+{time.monotonic() - self.started:.1f}s {what}")

    def hostile_outcome(self, kind: str, outcome: str, expected: bool) -> None:
        with self.lock:
            self.hostile.setdefault(kind, Counter())[outcome] += 1
            self.unexpected[kind] = self.unexpected.get(kind, 0) + (not expected)
            if not expected and len(self.hostile_examples) < MAX_EXAMPLES:
                self.hostile_examples.append(f"t+{time.monotonic() - self.started:.1f}s {kind}: {outcome}")


# --- well-behaved clients -------------------------------------------------------------------


def good_requests(rng: random.Random) -> Iterator[tuple[str, str, bytes | None, Callable[[bytes], bool]]]:
    """What a well-behaved client sends, in turn: method, path, body, and a check of the answer."""
    while True:
        yield "GET", "/hello", None, lambda body: body == HELLO_BODY
        sent = rng.randbytes(rng.randint(0, 2048))
        yield "POST", "/echo", sent, lambda body, sent=sent: body == sent
        yield "GET", "/slow?50", None, lambda body: body == b"slept 50 ms\n"


def good_client(port: int, seed: int, tally: Tally, stop: threading.Event) -> None:
    """A keep-alive client (closing every CLOSE_EVERY-th request). Every exception or unexpected
    answer is a failure, none retried: the server must not drop a request it accepted, even
    while recycling workers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    for n, (method, path, body, check) in enumerate(good_requests(random.Random(seed)), 1):
        if stop.is_set():
            break
        headers = {"Connection": "close"} if n % CLOSE_EVERY == 0 else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200 and check(data):
                tally.success()
            else:
                tally.failure(f"{method} {path}: status {resp.status}, body {data[:80]!r}")
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            tally.failure(f"{method} {path}: {type(e).__name__}: {e}")
            conn.close()
    conn.close()


# --- hostile clients ------------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def read_until_closed(sock: socket.socket, limit: int = 8 << 20) -> bytes:
    """What the server sends until it closes (a reset counts as closed), at most `limit` bytes."""
    received = bytearray()
    while len(received) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def first_status(data: bytes) -> str:
    match = STATUS_LINE.match(data)
    return match[1].decode() if match else ("closed" if not data else f"garbled {data[:20]!r}")


def raw_exchange(port: int, data: bytes) -> str:
    """Send raw bytes, read until the server closes, and return the first response's status."""
    with socket.create_connection((HOST, port), timeout=3 * TIMEOUT) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered before reading it all; the answer is still to be read
        return first_status(read_until_closed(sock))


def slowloris(port: int, rng: random.Random) -> tuple[str, bool]:
    """A byte every 0.5 s, of the request line or of a header: cut with 408 after Timeout."""
    prefix, slow = rng.choice([
        (b"", b"GET /hello?" + b"a" * 100 + b" HTTP/1.1\r\n"),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 100 + b"\r\n"),
    ])
    with socket.create_connection((HOST, port), timeout=3 * TIMEOUT) as sock:
        sock.sendall(prefix)
        answer = trickle(sock, slow, deadline=time.monotonic() + 3 * TIMEOUT)
    if answer is None:
        return "not cut", False
    status = first_status(answer)
    return status, status == "408"


def trickle(sock: socket.socket, data: bytes, deadline: float) -> bytes | None:
    """Send `data` a byte per 0.5 s until the server answers or closes (returns what it sent),
    or until `deadline` (None). `data` is long enough to outlast the deadline."""
    sock.settimeout(0.5)
    for byte in data:
        if time.monotonic() > deadline:
            return None
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            with contextlib.suppress(OSError):  # closed on us: its answer is read next round
                sock.sendall(bytes([byte]))
            continue
        except ConnectionResetError:
            return b""
        if answer:  # the rest of the response, until the server closes
            sock.settimeout(3 * TIMEOUT)
            answer += read_until_closed(sock)
        return answer
    return None


def garbage(port: int, rng: random.Random) -> tuple[str, bool]:
    """Random bytes ending a head: refused with a 4xx (or 501/505), never a hang or a crash."""
    status = raw_exchange(port, rng.randbytes(rng.randint(1, 512)) + b"\r\n\r\n")
    return status, status.isdigit() and (status.startswith("4") or status in ("501", "505"))


def oversized_headers(port: int, rng: random.Random) -> tuple[str, bool]:
    """A field above LimitRequestFieldSize, or more fields than LimitRequestFields: 431."""
    if rng.random() < 0.5:
        fields = b"X-Big: " + b"v" * 10000 + b"\r\n"
    else:
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    status = raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    return status, status == "431"


def large_body(port: int, rng: random.Random) -> tuple[str, bool]:
    """A body above LimitRequestBody (1M), declared or chunked: 413."""
    if rng.random() < 0.5:
        data = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + b"b" * 65536
    else:
        chunk = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
        data = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 24
    status = raw_exchange(port, data)
    return status, status == "413"


def guest(path: str, expected: set[int], length: int | None = None) -> Callable[[int, random.Random], tuple[str, bool]]:
    """A request to a misbehaving module; `length`, if given, is the body a 200 must have."""

    def run(port: int, rng: random.Random) -> tuple[str, bool]:
        conn = http.client.HTTPConnection(HOST, port, timeout=3 * (TIMEOUT + WASM_TIMEOUT))
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        ok = resp.status in expected and (length is None or resp.status != 200 or len(body) == length)
        return str(resp.status) + ("" if ok or resp.status != 200 else f" ({len(body)} bytes)"), ok

    return run


def disconnect(port: int, rng: random.Random) -> tuple[str, bool]:
    """Go away mid-head, mid-body, mid-response or while the guest runs (with a reset)."""
    how = rng.choice(["mid-head", "mid-body", "mid-response", "during-guest"])
    with socket.create_connection((HOST, port), timeout=3 * TIMEOUT) as sock:
        if how == "mid-head":
            sock.sendall(b"GET /hello HTTP/1.1\r\nHo")
        elif how == "mid-body":
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"d" * 100)
        elif how == "mid-response":
            sock.sendall(b"GET /headers?big HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1024)
        else:
            sock.sendall(b"GET /slow?300 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(rng.uniform(0, 0.2))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    return how, True


HOSTILE: list[tuple[str, Callable[[int, random.Random], tuple[str, bool]]]] = [
    ("slowloris", slowloris),
    ("garbage", garbage),
    ("oversized-headers", oversized_headers),
    ("large-body", large_body),
    ("trap", guest("/trap", {500})),
    ("loop", guest("/loop", {504})),
    ("membomb", guest("/membomb", {500})),
    ("bad-cgi-output", guest("/headers?garbage", {502})),
    ("big-output", guest("/headers?big", {200, 502}, length=BIG_OUTPUT)),
    ("disconnect", disconnect),
]


def hostile_client(port: int, index: int, threads: int, tally: Tally, stop: threading.Event) -> None:
    """Cycle through every hostile kind; the threads start spread over the list, so that even
    a short run with a few threads tries most kinds."""
    rng = random.Random(1000 + index)
    first = index * len(HOSTILE) // threads % len(HOSTILE)
    kinds = HOSTILE[first:] + HOSTILE[:first]
    for kind, attack in itertools.cycle(kinds):
        if stop.is_set():
            return
        try:
            outcome, expected = attack(port, rng)
        except (OSError, http.client.HTTPException) as e:
            outcome, expected = type(e).__name__, False
        tally.hostile_outcome(kind, outcome, expected)


# --- sampling -------------------------------------------------------------------------------


@dataclass
class Samples:
    initial_pids: set[int] = field(default_factory=set)
    seen_pids: set[int] = field(default_factory=set)
    min_workers: int = 1 << 30
    max_workers: int = 0
    rss_before: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    status_ok: int = 0
    status_failed: int = 0
    max_busy: int = 0

    def record_pids(self, pids: set[int]) -> None:
        if not pids:
            return  # the master is gone or between generations; nothing to learn
        self.seen_pids |= pids
        self.min_workers = min(self.min_workers, len(pids))
        self.max_workers = max(self.max_workers, len(pids))

    def record_rss(self, rss: int) -> None:
        self.rss_after = rss
        self.rss_peak = max(self.rss_peak, rss)


def server_status(port: int) -> dict[str, str]:
    """server-status?auto as a dict (also proves the status page works under load)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/server-status?auto", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise http.client.HTTPException(f"status {resp.status}")
    finally:
        conn.close()
    return dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)


def sampler(server: Server, samples: Samples, stop: threading.Event) -> None:
    """Worker pids often (restarts are counted from them); master RSS and server-status less so."""
    last_full = 0.0
    while not stop.wait(PID_POLL):
        samples.record_pids(server.worker_pids())
        if time.monotonic() - last_full < FULL_SAMPLE:
            continue
        last_full = time.monotonic()
        try:
            samples.record_rss(master_rss(server))
        except psutil.NoSuchProcess:
            return
        try:
            status = server_status(server.port)
            samples.status_ok += 1
            samples.max_busy = max(samples.max_busy, int(status.get("BusyWorkers", 0)))
        except (OSError, http.client.HTTPException, ValueError):
            samples.status_failed += 1


# --- the error log --------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\[[^\]]*\] \[(\w+)\] ")
REQUEST_ERROR = re.compile(r"\] request \S+: ")  # one failed request (here: a hostile client's)
REASONS = [  # (pattern in the error log, why a worker was replaced); first match wins
    (re.compile(r"above the hard MaxMemoryPerChild"), "killed above the hard memory limit"),
    (re.compile(r"above MaxMemoryPerChild"), "recycled by memory (MaxMemoryPerChild)"),
    (re.compile(r"recycling after \d+ connections"), "recycled by connections (MaxConnectionsPerChild)"),
    (re.compile(r"worker \d+ exited on signal (\w+)"), "exited on signal {0}"),
    (re.compile(r"worker \d+ exited with status (\d+)"), "exited with status {0}"),
    (re.compile(r"has shown no sign of life"), "hung, killed"),
    (re.compile(r"worker crashed"), "crashed"),
]


@dataclass
class LogSummary:
    levels: Counter[str]
    request_errors: int  # error lines about one request: expected, the hostile clients cause them
    reasons: Counter[str]
    notable: list[str]  # the first error-or-worse lines that are not about one failed request


def read_error_log(path: Path) -> LogSummary:
    levels: Counter[str] = Counter()
    request_errors = 0
    reasons: Counter[str] = Counter()
    notable: list[str] = []
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        levels[match[1] if match else "(continuation)"] += 1
        if match and match[1] in ("emerg", "alert", "crit", "error"):
            if match[1] == "error" and REQUEST_ERROR.search(line):
                request_errors += 1
            elif len(notable) < MAX_EXAMPLES:
                notable.append(line[:200])
        for pattern, reason in REASONS:
            found = pattern.search(line)
            if found:
                reasons[reason.format(*found.groups())] += 1
                break
    return LogSummary(levels, request_errors, reasons, notable)


# --- the run --------------------------------------------------------------------------------


@dataclass
class SoakResult:
    options: Options
    root: Path
    port: int
    seconds: float
    tally: Tally
    samples: Samples
    log: LogSummary
    stop: Stopped
    aborted: str = ""  # why the load ended early, if it did

    @property
    def rss_growth(self) -> int:
        return self.samples.rss_after - self.samples.rss_before

    @property
    def passed(self) -> bool:
        return (
            not self.aborted
            and self.tally.failed == 0
            and self.rss_growth < RSS_GROWTH_LIMIT
            and self.stop.exit_status == 0
            and not self.stop.killed_master
            and not self.stop.leftover_workers
        )


def start_threads(server: Server, options: Options, tally: Tally, samples: Samples,
                  stop: threading.Event) -> list[threading.Thread]:
    targets: list[tuple[Callable[..., None], tuple[object, ...]]] = [(sampler, (server, samples, stop))]
    targets += [(good_client, (server.port, i, tally, stop)) for i in range(options.clients)]
    targets += [(hostile_client, (server.port, i, options.hostile, tally, stop)) for i in range(options.hostile)]
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for thread in threads:
        thread.start()
    return threads


def run_load(server: Server, options: Options, tally: Tally, samples: Samples) -> tuple[float, str]:
    """Load the server for the duration; returns the seconds it lasted and why it ended early."""
    stop = threading.Event()
    threads = start_threads(server, options, tally, samples, stop)
    start = time.monotonic()
    deadline = start + options.minutes * 60
    aborted = ""
    try:
        while time.monotonic() < deadline:
            if not server.running.alive():
                aborted = f"the server exited during the run with status {server.running.popen.returncode}"
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        stop.set()
        seconds = time.monotonic() - start
        join_deadline = time.monotonic() + 4 * TIMEOUT  # the longest attack is a 3 * Timeout wait
        for thread in threads:
            thread.join(timeout=max(0.1, join_deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck and not aborted:
        aborted = f"{stuck} client thread(s) still stuck {4 * TIMEOUT} s after the end"
    return seconds, aborted


def still_serving(server: Server, tally: Tally) -> None:
    """One last request after the load: the server must still answer."""
    try:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=15)
        conn.request("GET", "/hello", headers={"Connection": "close"})
        resp = conn.getresponse()
        ok = resp.status == 200 and resp.read() == HELLO_BODY
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        tally.failure(f"after the load, GET /hello: {type(e).__name__}: {e}")
        return
    if ok:
        tally.success()
    else:
        tally.failure(f"after the load, GET /hello: status {resp.status}")


def master_rss(server: Server) -> int:
    return server.running.ps.memory_info().rss


def run(options: Options, root: Path) -> SoakResult:
    """Start the server in `root`, load it, stop it, and gather what happened."""
    body = config_body(max_workers=max(12, options.clients + options.hostile + 2))
    server = Server(root, body, start_servers=START_SERVERS, log_level="notice")
    # Own session: a Ctrl-C in the terminal reaches only the soak, which stops the server.
    process = server.start(wait=False, start_new_session=True).running
    tally, samples = Tally(), Samples()
    seconds, aborted = 0.0, ""
    try:
        server.wait_ready()
        # The master answers while still forking its first workers: later ones are restarts.
        samples.initial_pids = server.wait_for_workers(lambda pids: len(pids) >= START_SERVERS, timeout=30,
                                                       what=f"the first {START_SERVERS} workers")
        samples.record_pids(samples.initial_pids)
        samples.rss_before = samples.rss_after = samples.rss_peak = master_rss(server)
        tally.started = time.monotonic()
        seconds, aborted = run_load(server, options, tally, samples)
        if process.alive():
            samples.record_rss(master_rss(server))
            still_serving(server, tally)
    except WaitFailed as e:
        aborted = str(e)
    finally:
        stopped = process.stop(STOP_GRACE)
    log = read_error_log(server.error_log)
    return SoakResult(options, root, server.port, seconds, tally, samples, log, stopped, aborted)


# --- the report -----------------------------------------------------------------------------


def mib(n: int, signed: bool = False) -> str:
    return f"{n / (1 << 20):{'+' if signed else ''}.1f} MiB"


def report(result: SoakResult) -> str:
    """The human-readable summary: what a reviewer needs to judge a run without the logs."""
    t, s, o = result.tally, result.samples, result.options
    lines = [
        f"soak: {o.minutes:g} min, {o.clients} clients, {o.hostile} hostile, http://{HOST}:{result.port}/",
        f"  duration          {result.seconds:.1f} s",
        f"  requests ok       {t.ok}  ({t.ok / result.seconds if result.seconds else 0:.1f} req/s)",
        f"  requests failed   {t.failed}",
        *(f"    {f}" for f in t.failures),
        f"  hostile           {'kind                runs  unexpected  outcomes' if o.hostile else 'none'}",
    ]
    for kind, _ in HOSTILE if o.hostile else []:
        outcomes = t.hostile.get(kind, Counter())
        seen = ", ".join(f"{k} x{n}" for k, n in outcomes.most_common())
        lines.append(f"    {kind:<34}{sum(outcomes.values()):>4}  {t.unexpected.get(kind, 0):>10}  {seen}")
    lines += [f"    unexpected: {e}" for e in t.hostile_examples]
    new_pids = len(s.seen_pids - s.initial_pids)
    lines += [
        f"  worker restarts   {new_pids} new worker pids (started with {len(s.initial_pids)}, "
        f"{s.min_workers if s.seen_pids else 0}..{s.max_workers} at once; sampled every {PID_POLL:g} s)",
        *(f"    {n:>5}  {reason}" for reason, n in result.log.reasons.most_common()),
        f"    {max(0, new_pids - sum(result.log.reasons.values())):>5}  other (pool growth, or a replacement "
        "of a worker the pool had stopped)",
        f"  server-status     {s.status_ok} answered, {s.status_failed} failed, at most {s.max_busy} busy workers",
        f"  master RSS        {mib(s.rss_before)} -> {mib(s.rss_after)} ({mib(result.rss_growth, signed=True)}; "
        f"peak {mib(s.rss_peak)}; limit {mib(RSS_GROWTH_LIMIT)} growth)",
        "  error log         " + (", ".join(f"{lvl} {n}" for lvl, n in result.log.levels.most_common()) or "empty")
        + f" ({result.log.request_errors} of the errors are failed requests)",
        *(f"    {line}" for line in result.log.notable),
        f"  server exit       {stop_text(result.stop)}",
    ]
    if result.aborted:
        lines.append(f"  ABORTED           {result.aborted}")
    lines.append(f"  result            {'PASS' if result.passed else 'FAIL'}")
    return "\n".join(lines)


def stop_text(stop: Stopped) -> str:
    text = f"status {stop.exit_status} after SIGTERM, in {stop.seconds:.1f} s"
    if stop.killed_master:
        text = f"did not exit within {STOP_GRACE:g} s of SIGTERM: killed (status {stop.exit_status})"
    if stop.leftover_workers:
        text += f"; workers left running, killed: {stop.leftover_workers}"
    return text


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    # SIGTERM to the soak ends it like Ctrl-C: the finally blocks stop the server it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = Path(tempfile.mkdtemp(prefix="prefork-wasm-soak-"))
    try:
        result = run(options, root)
    except KeyboardInterrupt:
        print(f"soak: interrupted; the server was stopped; logs in {root}", file=sys.stderr)
        return 130
    print(report(result), flush=True)
    if result.passed and not options.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"  logs              {root}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
