"""scripts/rolling-restart: scale-out on one machine as proof. N prefork-wasm instances on
loopback behind HAProxy; wrk drives load through HAProxy while a new version of the module is
rolled through the instances one at a time by graceful restart (WasmModule rewritten, SIGUSR1,
wait until that instance serves the new version, then the next). Reports failed requests
(wrk's socket errors plus non-2xx answers; target 0), what HAProxy retried or saw fail, and
req/s against one instance alone, measured in the same invocation.

Run through scripts/rolling-restart (installs haproxy and wrk from Debian, sets up .venv).
Every process is started here and stopped by pid; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from harness import Process, WaitFailed, free_port, http_get, wait_for

from . import procs, report, wrk
from .peers import ROOT, fill

RESULTS = ROOT / "benchmarks" / "results"
# The module rolled out: a CGI hello whose answer names its version, so an instance is seen
# serving the new one. Each version is new bytes, so each restart compiles (into the shared
# WasmCacheDir) as a real deployment of a changed module does.
HELLO_WAT = Template("""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $$fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "$text")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const $length))
    (drop (call $$fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
""")
SERVE_TIMEOUT = 60.0  # seconds an instance gets to serve a new version after SIGUSR1


def log(msg: str) -> None:
    print(f"rolling-restart: {msg}", flush=True)


def body_of(version: int) -> bytes:
    return f"Hello from WebAssembly! (v{version})\n".encode()


def write_module(run_dir: Path, version: int) -> Path:
    response = b"Content-Type: text/plain\r\n\r\n" + body_of(version)
    text = response.decode().replace("\r", "\\r").replace("\n", "\\n")
    path = run_dir / f"hello-v{version}.wat"
    path.write_text(HELLO_WAT.substitute(text=text, length=len(response)))
    return path


@dataclass
class Instance:
    name: str
    workers: int
    run_dir: Path
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    version: int = 1

    @property
    def conf(self) -> Path:
        return self.run_dir / f"{self.name}.conf"

    def configure(self, version: int) -> None:
        fill("prefork-wasm-rolling.conf.in", self.conf, dir=self.run_dir, port=self.port, name=self.name,
             workers=self.workers, server_limit=2 * self.workers, module=write_module(self.run_dir, version))
        self.version = version

    def start(self) -> None:
        self.configure(self.version)
        self.proc = procs.start_prefork_wasm(self.name, self.conf, self.run_dir / f"{self.name}.out")
        procs.wait_http(self.proc, self.port, "/hello", timeout=120)

    def serves(self, version: int) -> bool:
        try:
            status, body = http_get(self.port, "/hello", timeout=2.0)
        except OSError:
            return False
        return status == 200 and body == body_of(version)

    def roll_to(self, version: int) -> float:
        """Graceful restart onto `version`; seconds until a new connection gets it."""
        assert self.proc is not None
        self.configure(version)
        sent = time.monotonic()
        self.proc.popen.send_signal(signal.SIGUSR1)
        self.proc.wait_until(lambda: self.serves(version), SERVE_TIMEOUT, f"{self.name} to serve v{version}",
                             interval=0.01)
        return time.monotonic() - sent

    def pids(self) -> list[int]:
        return [self.proc.pid, *(p.pid for p in self.proc.children())] if self.proc else []


class HAProxy:
    def __init__(self, run_dir: Path, instances: list[Instance], retry_on: str) -> None:
        self.run_dir = run_dir
        self.port = free_port()
        self.conf = run_dir / "haproxy.cfg"
        servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port}" for i in instances)
        fill("haproxy-rolling.cfg.in", self.conf, dir=run_dir, port=self.port, servers=servers, retry_on=retry_on,
             workers=instances[0].workers)
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.proc = procs.start("haproxy", [binary, "-db", "-f", str(self.conf)], run_dir / "haproxy.out")
        self.names = [i.name for i in instances]

    def command(self, line: str) -> str:
        """One command on HAProxy's runtime API (the stats socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.run_dir / "haproxy.sock"))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """`show stat`: one row per frontend, backend and server."""
        text = self.command("show stat").lstrip("# ")
        return {f"{row['pxname']}/{row['svname']}": row for row in csv.DictReader(text.splitlines())}

    def drain(self, name: str, timeout: float = 10.0) -> None:
        """Send no new request to `name` and wait until it has none in flight or queued.

        MAINT, not DRAIN: HAProxy 2.6 does not hand a server back from DRAIN the requests
        waiting in the backend's queue (with every server at its maxconn, new ones queue too),
        so it got no traffic at all (measured: 0 sessions on it, 10-14 queued, until every
        server was out and the queue timed out with 503s); one back from MAINT takes them."""
        self.command(f"set server prefork_wasm/{name} state maint")

        def idle() -> bool:
            row = self.stats()[f"prefork_wasm/{name}"]
            return int(row["scur"] or 0) == 0 and int(row["qcur"] or 0) == 0

        wait_for(idle, timeout, interval=0.01, what=f"haproxy: {name} to have no request in flight or queued")

    def ready(self, name: str) -> None:
        self.command(f"set server prefork_wasm/{name} state ready")

    def wait_all_up(self, timeout: float = 30.0) -> None:
        last: dict[str, str] = {}

        def all_up() -> bool:
            nonlocal last
            try:
                rows = self.stats()
                last = {n: rows[f"prefork_wasm/{n}"]["status"] for n in self.names}
            except (OSError, KeyError):
                return False
            return all(s == "UP" for s in last.values())

        try:
            self.proc.wait_until(all_up, timeout, "haproxy to see every server UP", interval=0.1)
        except WaitFailed as e:
            raise WaitFailed(f"{e}\nlast seen: {last}") from None

    def counters(self) -> dict[str, int]:
        """Failures HAProxy saw on the way to the instances, summed over them, and what it
        hid from the client by retrying or redispatching."""
        rows = self.stats()
        servers = [rows[f"prefork_wasm/{n}"] for n in self.names]

        def total(key: str) -> int:
            return sum(int(r.get(key) or 0) for r in servers)

        backend = rows["prefork_wasm/BACKEND"]
        return {
            "requests": int(backend.get("stot") or 0),
            "conn_errors": total("econ"), "resp_errors": total("eresp"),
            "retries": total("wretr"), "redispatches": total("wredis"),
            "server_5xx": total("hrsp_5xx"), "down_transitions": total("chkdown"),
            "client_5xx": int(rows["web/FRONTEND"].get("hrsp_5xx") or 0),
        }


def measure(url: str, seconds: float, connections: int, pids: list[int], close: bool = False) -> dict[str, Any]:
    before = report.cpu_snapshot(pids)
    r: dict[str, Any] = dict(wrk.run(url, connections, seconds, close=close))
    r["other_cpu"] = report.foreign_load(before, report.cpu_snapshot(pids))["foreign_cpu_share"]
    return r


def roll(instances: list[Instance], stop: threading.Event, pause: float, out: list[dict[str, Any]],
         proxy: HAProxy | None = None) -> None:
    """Roll new versions through the instances, one at a time, until `stop` is set; with a
    `proxy`, each instance is drained there first and put back once it serves the new version."""
    version = instances[0].version
    while not stop.is_set():
        version += 1
        for inst in instances:
            if stop.wait(pause):
                return
            if proxy:
                proxy.drain(inst.name)
            seconds = inst.roll_to(version)
            if proxy:
                proxy.ready(inst.name)
            out.append({"instance": inst.name, "version": version, "serving_after_s": seconds,
                        "at": time.monotonic()})
            log(f"{inst.name} serves v{version} {seconds:.2f}s after SIGUSR1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/rolling-restart", description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=3, help="prefork-wasm instances behind HAProxy (default 3)")
    p.add_argument("--workers", type=int, default=2, help="workers per instance (default 2)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--seconds", type=float, default=24, help="load while rolling (default 24)")
    p.add_argument("--baseline-seconds", type=float, default=8,
                   help="load for one instance alone and for all behind HAProxy without restarts (default 8)")
    p.add_argument("--pause", type=float, default=1.0,
                   help="seconds between one instance serving the new version and the next restart (default 1)")
    p.add_argument("--drain", action="store_true",
                   help="take each instance out of HAProxy (runtime API, maint) before its restart, "
                        "ready once it serves the new version (default: no drain, the listener stays)")
    p.add_argument("--retry-on", default="conn-failure",
                   help="HAProxy's retry-on (default conn-failure, HAProxy's own default)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to use < 10%% of the CPU")
    p.add_argument("--name", default="rolling-restart", help="results file stem in benchmarks/results")
    p.add_argument("--keep-dir", action="store_true", help="keep the temp folder (configs, logs)")
    a = p.parse_args(argv)
    if not 1 <= a.instances <= 16 or not 1 <= a.workers <= 32:
        p.error("--instances must be 1 to 16, --workers 1 to 32")
    if not 5 <= a.seconds <= 600 or not 1 <= a.baseline_seconds <= 600:
        p.error("--seconds must be 5 to 600, --baseline-seconds 1 to 600")
    return a


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    machine_start = report.cpu_snapshot()
    instances = [Instance(f"pw{n + 1}", args.workers, run_dir) for n in range(args.instances)]
    for inst in instances:
        inst.start()
        log(f"{inst.name} serves v1 on 127.0.0.1:{inst.port} (pid {inst.proc.pid if inst.proc else '?'})")
    proxy = HAProxy(run_dir, instances, args.retry_on)
    proxy.wait_all_up()
    log(f"haproxy on 127.0.0.1:{proxy.port}, every instance UP")
    ours = lambda: [pid for i in instances for pid in i.pids()] + [proxy.proc.pid]  # noqa: E731
    front = f"http://127.0.0.1:{proxy.port}/hello"

    wrk.run(front, args.connections, 2.0, close=False)  # warm-up: every worker has run the module
    direct = f"http://127.0.0.1:{instances[0].port}/hello"
    single = measure(direct, args.baseline_seconds, args.connections, ours())
    log(f"one instance alone: {single['rps']:,.0f} req/s, failed {failed(single)}, late {late(single)}")
    # HAProxy opens a connection per request to an instance (http-server-close): the same for one alone
    single_close = measure(direct, args.baseline_seconds, args.connections, ours(), close=True)
    log(f"one instance alone, Connection: close: {single_close['rps']:,.0f} req/s, "
        f"failed {failed(single_close)}, late {late(single_close)}")
    steady = measure(front, args.baseline_seconds, args.connections, ours())
    log(f"{len(instances)} behind haproxy: {steady['rps']:,.0f} req/s, failed {failed(steady)}, late {late(steady)}")

    counters_before = proxy.counters()
    stop = threading.Event()
    restarts: list[dict[str, Any]] = []
    failure: list[str] = []

    def roller() -> None:
        try:
            roll(instances, stop, args.pause, restarts, proxy if args.drain else None)
        except Exception as e:  # reported after the load, which goes on regardless
            failure.append(str(e))

    thread = threading.Thread(target=roller, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        rolling = measure(front, args.seconds, args.connections, ours())
    finally:
        stop.set()
        thread.join(SERVE_TIMEOUT + 5)
    after = proxy.counters()
    hidden = {k: after[k] - counters_before[k] for k in after}
    versions_served = {i.name: i.version for i in instances}
    log(f"while rolling: {rolling['rps']:,.0f} req/s, failed {failed(rolling)}, late {late(rolling)}, "
        f"{len(restarts)} graceful restarts, haproxy {hidden}")
    load = report.foreign_load(machine_start, report.cpu_snapshot(ours()))
    rolls = [r for r in restarts if r["at"] <= started + args.seconds]
    return {
        "machine": report.machine(),
        "source": _git_describe(),
        "settings": {k: getattr(args, k) for k in ("instances", "workers", "connections", "seconds",
                                                    "baseline_seconds", "pause", "retry_on", "drain")},
        "single": single, "single_close": single_close, "steady": steady, "rolling": rolling,
        "restarts": rolls, "restart_failure": failure[0] if failure else "",
        "haproxy_during_roll": hidden, "versions_at_end": versions_served,
        "load": load,
    }


def _git_describe() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def failed(r: dict[str, Any]) -> int:
    """Requests that got no proper answer: connect, read or write errors, non-2xx answers, and
    connections that got nothing at all (stalled)."""
    return int(r["socket_errors"] - r["timeouts"] + r["status_errors"] + r["stalled"])


def late(r: dict[str, Any]) -> int:
    """Answered, but after wrk's --timeout (2 s): wrk counts these as timeout errors once the
    answer arrives, and leaves them out of the latencies."""
    return int(r["timeouts"])


def markdown(res: dict[str, Any]) -> str:
    s, m, load = res["settings"], res["machine"], res["load"]
    times = [r["serving_after_s"] for r in res["restarts"]]
    single_rps = res["single"]["rps"]
    rows = [
        ("one instance alone (direct)", res["single"], ""),
        ("one instance alone, `Connection: close`", res["single_close"], ""),
        (f"{s['instances']} instances behind HAProxy", res["steady"], ""),
        (f"{s['instances']} behind HAProxy, rolling graceful restarts", res["rolling"],
         f"{len(times)} restarts"),
    ]
    hp = res["haproxy_during_roll"]
    lines = [
        f"{m['date']}, {m['nproc']} CPUs ({m['cpu']}), source {res['source']}; "
        f"{s['instances']} instances x {s['workers']} workers, wrk -t2 -c{s['connections']} keep-alive "
        f"through HAProxy (retry-on {s['retry_on']}; "
        + ("each instance taken out (maint) before its restart" if s.get("drain") else "no drain")
        + f"), {s['baseline_seconds']:g} s baselines, "
        f"{s['seconds']:g} s while rolling; other load on the machine {load['foreign_cpu_share']:.0%} "
        f"of its CPU, load average {load['loadavg_start']:.2f} -> {load['loadavg_end']:.2f}.",
        "",
        "| run | req/s | vs one instance | p50 ms | p99 ms | max ms | failed requests | answered after > 2 s "
        "| restarts | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r, extra in rows:
        lines.append(f"| {label} | {r['rps']:,.0f} | {r['rps'] / single_rps if single_rps else 0:.2f}x "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.0f} | {failed(r)} | {late(r)} "
                     f"| {extra} | {r['other_cpu']:.0%} |")
    lines += [
        "",
        f"While rolling: {len(times)} graceful restarts ({len(times) / max(1, s['instances']):.1f} per "
        f"instance), a new version served "
        + (f"{statistics.median(times):.2f} s (median, max {max(times):.2f} s) after SIGUSR1" if times else "never")
        + f"; HAProxy saw {hp['conn_errors']} connection errors, {hp['resp_errors']} response errors, "
        f"{hp['server_5xx']} 5xx from the instances, {hp['down_transitions']} health-check downs, and "
        f"retried {hp['retries']} requests ({hp['redispatches']} redispatched)."
        + (f" The roll stopped: {res['restart_failure']}" if res["restart_failure"] else ""),
    ]
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through run_folder, which stops every process started


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.wait_quiet:
        log(f"other processes use {report.wait_quiet(args.wait_quiet, log):.0%} of the CPU; starting")
    try:
        with procs.run_folder(args.keep_dir, log) as run_dir:
            res = run(args, run_dir)
    except KeyboardInterrupt:
        log("interrupted, stopping every process it started")
        return 130
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / args.name
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    text = markdown(res)
    stem.with_suffix(".md").write_text(f"# Rolling graceful restart behind HAProxy\n\n{text}\n")
    print()
    print(text)
    bad = sum(failed(res[k]) for k in ("single", "single_close", "steady", "rolling"))
    ok = bad == 0 and not res["restart_failure"] and len(res["restarts"]) >= args.instances
    slow = sum(late(res[k]) for k in ("single", "single_close", "steady", "rolling"))
    log(f"wrote {stem.with_suffix('.md')}; " + ("PASS: no failed request" if ok else "FAIL")
        + (f" ({slow} answered after more than 2 s)" if slow else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
