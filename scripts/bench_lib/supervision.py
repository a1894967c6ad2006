"""`--supervision`: the master's side of prefork-wasm, measured (the performance issue's asks).

1. Worker start, fork to ready, with the 26 MB CPython-for-WASI module: a pool of one worker
   (StartServers 1, MaxRequestWorkers 1, LogLevel debug); the worker is SIGKILLed and the
   driver polls the master's children every 1 ms until the replacement exists (the master's
   reaction: reap + fork) and until its process title reads `prefork-wasm: worker [idle]`
   (ready to accept). The master's debug line "forked worker PID into slot N" gives the fork's
   own timestamp (microseconds). Then one /py request is timed (the new worker's first).
2. Supervision CPU at 32 idle workers: StartServers 32, MaxMemoryPerChild 1G, so the master
   samples every worker's memory each second; the master's user+system CPU time over a window,
   as % of one core, for MemoryMetric uss and rss (and MaxMemoryPerChild 0 as the baseline).
3. Graceful restart under load: hello.wasm, 4 workers, wrk -t2 -c4 keep-alive; a steady run,
   then a run during which the master gets SIGUSR1 every 2 s.
4. Idle cost at 32 workers (`--only idle` runs just this): the user+system CPU of the master
   and all 32 idle workers (every thread) over a window, as % of one core; then N sequential
   `Connection: close` requests, counting how many workers each one wakes: the voluntary
   context switches of every worker's main thread (/proc/PID/status; a worker blocked in its
   accept wait switches once per wake-up), minus those of an idle window as long.

Every server is started here, tracked by pid and stopped by pid; loopback only.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from harness import Process, free_port, http_get

from . import interpreter, procs, report, wrk
from .peers import ROOT, fill
from .procs import idle_workers, is_idle_worker

PY_LOCATION = """<Location /py>
    SetHandler wasm-handler
    WasmModule "{wasm}"
    WasmEnableCGI On
    WasmMapDir /app benchmarks/app
    WasmArg /app/hello.py
</Location>"""
FORKED = re.compile(r"^\[(\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2})\.(\d{6}) (\d{4})\].*forked worker (\d+) into slot")


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _start(run_dir: Path, name: str, *, start: int, min_spare: int, max_spare: int, max_workers: int,
           server_limit: int, max_memory: str = "0", metric: str = "uss", loglevel: str = "warn",
           python: bool = False, path: str = "/hello") -> tuple[Process, int]:
    port = free_port()
    locations = PY_LOCATION.format(wasm=interpreter.PYTHON_WASM) if python else ""
    conf = fill("prefork-wasm-supervision.conf.in", run_dir / f"{name}.conf", dir=run_dir, port=port,
                name=name, root=ROOT, cache=run_dir / "sup-cache", loglevel=loglevel, start=start,
                min_spare=min_spare, max_spare=max_spare, max_workers=max_workers,
                server_limit=server_limit, max_memory=max_memory, metric=metric, locations=locations)
    proc = procs.start_prefork_wasm(name, conf, run_dir / f"{name}.out")
    procs.wait_http(proc, port, path, timeout=300)
    return proc, port


def _fork_times(error_log: Path) -> dict[int, float]:
    """pid -> epoch seconds of the master's 'forked worker PID into slot N' debug line."""
    out = {}
    try:
        text = error_log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = FORKED.match(line)
        if m:
            t = datetime.strptime(f"{m.group(1)} {m.group(3)}", "%a %b %d %H:%M:%S %Y").timestamp()
            out[int(m.group(4))] = t + int(m.group(2)) / 1e6
    return out


def worker_start(run_dir: Path, reps: int = 10) -> dict[str, Any]:
    """SIGKILL the only worker; time the master's reaction and the new worker's fork -> ready."""
    interpreter.ensure_module()
    name = "sup-start"
    proc, port = _start(run_dir, name, start=1, min_spare=1, max_spare=2, max_workers=1, server_limit=1,
                        loglevel="debug", python=True, path="/py")
    samples = []
    try:
        (old,) = idle_workers(proc, 1)
        http_get(port, "/py")
        for i in range(reps):
            old = idle_workers(proc, 1)[0]
            time.sleep(0.3)
            t_kill_wall, t_kill = time.time(), time.monotonic()
            os.kill(old.pid, signal.SIGKILL)
            new = None
            t_seen = t_ready = None
            deadline = t_kill + 30
            while time.monotonic() < deadline:
                kids = [k for k in proc.children() if k.pid != old.pid]
                if kids:
                    if new is None:
                        new, t_seen = kids[0], time.monotonic()
                    if is_idle_worker(new):
                        t_ready = time.monotonic()
                        t_ready_wall = time.time()
                        break
                time.sleep(0.001)
            if new is None or t_ready is None:
                raise RuntimeError(f"{name}: no ready replacement within 30 s:\n{proc.tail()}")
            t0 = time.monotonic()
            status, body = http_get(port, "/py")
            first_ms = (time.monotonic() - t0) * 1000
            if status != 200 or b"Hello from Python" not in body:
                raise RuntimeError(f"/py answered {status} {body[:200]!r}")
            time.sleep(0.05)  # the debug line is written by now
            forked = _fork_times(run_dir / f"{name}.error.log").get(new.pid)
            s = {
                "kill_to_child_seen_ms": (t_seen - t_kill) * 1000,
                "kill_to_ready_ms": (t_ready - t_kill) * 1000,
                "fork_to_ready_ms": (t_ready_wall - forked) * 1000 if forked else None,
                "kill_to_fork_ms": (forked - t_kill_wall) * 1000 if forked else None,
                "first_request_ms": first_ms,
            }
            samples.append(s)
            log(f"worker start {i + 1}/{reps}: kill->fork {s['kill_to_fork_ms'] or -1:.1f} ms, fork->ready "
                f"{s['fork_to_ready_ms'] or -1:.1f} ms, kill->ready {s['kill_to_ready_ms']:.1f} ms, "
                f"first /py {first_ms:.1f} ms")
    finally:
        proc.stop()

    def med(key: str) -> float | None:
        vals = [s[key] for s in samples if s[key] is not None]
        return statistics.median(vals) if vals else None

    return {"reps": reps, "samples": samples,
            "median": {k: med(k) for k in samples[0]},
            "max": {k: max((s[k] for s in samples if s[k] is not None), default=None) for k in samples[0]}}


def supervision_cpu(run_dir: Path, workers: int = 32, seconds: float = 20.0) -> list[dict[str, Any]]:
    rows = []
    for max_memory, metric in (("1G", "uss"), ("1G", "rss"), ("0", "uss")):
        name = f"sup-cpu-{metric}-{max_memory}"
        proc, port = _start(run_dir, name, start=workers, min_spare=1, max_spare=workers + 8,
                            max_workers=workers, server_limit=64, max_memory=max_memory, metric=metric)
        try:
            kids = idle_workers(proc, workers)
            time.sleep(2.0)
            master = psutil.Process(proc.pid)
            ours = [proc.pid] + [k.pid for k in kids]
            snap = report.cpu_snapshot(ours)
            c0, k0, w0 = master.cpu_times(), _cpu_seconds(kids), time.monotonic()
            time.sleep(seconds)
            c1, k1, w1 = master.cpu_times(), _cpu_seconds(kids), time.monotonic()
            other = report.foreign_load(snap, report.cpu_snapshot(ours))["foreign_cpu_share"]
            alive = len(proc.children())
            cpu = (c1.user - c0.user) + (c1.system - c0.system)
            row = {"workers": workers, "alive_at_end": alive, "max_memory_per_child": max_memory,
                   "memory_metric": metric, "window_s": w1 - w0,
                   "master_cpu_s": cpu, "master_cpu_pct_of_core": 100 * cpu / (w1 - w0),
                   "user_s": c1.user - c0.user, "system_s": c1.system - c0.system, "other_cpu": other,
                   "workers_cpu_pct_of_core": 100 * (k1 - k0) / (w1 - w0)}
            rows.append(row)
            log(f"supervision {workers} workers, MaxMemoryPerChild {max_memory} MemoryMetric {metric}: "
                f"master {row['master_cpu_pct_of_core']:.2f}% of a core, the idle workers together "
                f"{row['workers_cpu_pct_of_core']:.2f}%, over {row['window_s']:.0f}s "
                f"(other load {other:.0%})")
        finally:
            proc.stop()
    return rows


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU time of all `processes`."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def _main_thread_switches(pids: list[int]) -> int:
    """Voluntary context switches of each process's main thread (/proc/PID/status counts the
    thread group leader only, so a ticker thread does not blur the accept loop's wake-ups)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def idle_cost(run_dir: Path, workers: int = 32, seconds: float = 20.0, connections: int = 200) -> dict[str, Any]:
    name = "sup-idle"
    proc, port = _start(run_dir, name, start=workers, min_spare=1, max_spare=workers + 8,
                        max_workers=workers, server_limit=64)
    try:
        kids = idle_workers(proc, workers)
        time.sleep(2.0)
        everyone = [psutil.Process(proc.pid)] + kids
        pids = [p.pid for p in kids]
        snap = report.cpu_snapshot([p.pid for p in everyone])

        c0, w0 = _cpu_seconds(everyone), time.monotonic()
        time.sleep(seconds)
        c1, w1 = _cpu_seconds(everyone), time.monotonic()
        other = report.foreign_load(snap, report.cpu_snapshot([p.pid for p in everyone]))["foreign_cpu_share"]
        s0, t0 = _main_thread_switches(pids), time.monotonic()
        for _ in range(connections):
            status, _ = http_get(port, "/hello")
            if status != 200:
                raise RuntimeError(f"{name}: /hello answered {status}")
        idle_workers(proc, workers)
        s1, t1 = _main_thread_switches(pids), time.monotonic()
        time.sleep(t1 - t0)  # an idle window as long: the workers' own once-a-second wake-ups
        s2 = _main_thread_switches(pids)
        alive = len(proc.children())
    finally:
        proc.stop()
    woken = ((s1 - s0) - (s2 - s1)) / connections
    row = {"workers": workers, "alive_at_end": alive, "window_s": w1 - w0, "cpu_s": c1 - c0,
           "cpu_pct_of_core": 100 * (c1 - c0) / (w1 - w0), "other_cpu": other,
           "connections": connections, "switches": s1 - s0, "idle_switches": s2 - s1,
           "switches_per_connection": woken}
    log(f"idle cost: master + {workers} idle workers {row['cpu_pct_of_core']:.2f}% of a core over "
        f"{row['window_s']:.0f}s (other load {other:.0%}); {connections} sequential connections: "
        f"{woken:.2f} worker wake-ups (voluntary switches) per connection")
    return row


def graceful_restart(run_dir: Path, seconds: float = 20.0, every: float = 2.0, workers: int = 4,
                     server_limit: int = 16) -> dict[str, Any]:
    """A restart forks the new generation while the old one finishes its connections: the
    scoreboard (ServerLimit) needs room for both, as in Apache, so it is larger than the pool."""
    name = "sup-graceful"
    proc, port = _start(run_dir, name, start=workers, min_spare=1, max_spare=workers, max_workers=workers,
                        server_limit=server_limit)
    url = f"http://127.0.0.1:{port}/hello"
    try:
        idle_workers(proc, workers)
        wrk.run(url, workers, 2.0, close=False)  # warm-up
        ours = lambda: [proc.pid] + [k.pid for k in proc.children()]  # noqa: E731
        snap = report.cpu_snapshot(ours())
        steady = wrk.run(url, workers, seconds, close=False)
        steady["other_cpu"] = report.foreign_load(snap, report.cpu_snapshot(ours()))["foreign_cpu_share"]
        log(f"graceful: steady p50 {steady['p50_ms']:.2f} ms p99 {steady['p99_ms']:.2f} ms "
            f"errors {steady['errors']}")
        stop = threading.Event()
        sent = []

        def restarter() -> None:
            while not stop.wait(every):
                os.kill(proc.pid, signal.SIGUSR1)
                sent.append(time.monotonic())

        t = threading.Thread(target=restarter, daemon=True)
        snap = report.cpu_snapshot(ours())
        t.start()
        try:
            during = wrk.run(url, workers, seconds, close=False)
        finally:
            stop.set()
            t.join()
        during["other_cpu"] = report.foreign_load(snap, report.cpu_snapshot(ours()))["foreign_cpu_share"]
        ok_after = http_get(port, "/hello")[0] == 200 and proc.alive()
        log(f"graceful: {len(sent)} restarts, p50 {during['p50_ms']:.2f} ms p99 {during['p99_ms']:.2f} ms "
            f"errors {during['errors']} (socket {during['socket_errors']}, status {during['status_errors']})")
    finally:
        proc.stop()
    return {"workers": workers, "server_limit": server_limit, "connections": workers, "seconds": seconds,
            "restart_every_s": every, "restarts": len(sent), "steady": steady, "restarting": during,
            "p99_ratio": during["p99_ms"] / steady["p99_ms"] if steady["p99_ms"] else None,
            "server_ok_after": ok_after}


def run(run_dir: Path, quick: bool = False, idle_only: bool = False) -> dict[str, Any]:
    window = 5.0 if quick else 20.0
    res: dict[str, Any] = {}
    log("supervision: idle cost of 32 workers (CPU, wake-ups per connection)")
    res["idle"] = idle_cost(run_dir, 32, window)
    if idle_only:
        return res
    log("supervision: worker start with the CPython module (fork -> ready)")
    res["worker_start"] = worker_start(run_dir, reps=4 if quick else 10)
    log("supervision: master CPU at 32 idle workers")
    res["cpu"] = supervision_cpu(run_dir, 32, window)
    log("supervision: graceful restart under load")
    res["graceful"] = graceful_restart(run_dir, window, 2.0, 4)
    return res


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def idle_markdown(r: dict[str, Any]) -> str:
    pct = r["cpu_pct_of_core"]
    return "\n".join([
        f"### Idle cost of {r['workers']} workers (target: < 1% of one core in total)"
        + (f" (measured {r['date']}, source {r['prefork_wasm_source']})" if "date" in r else ""),
        "",
        f"StartServers {r['workers']}, all idle: the user+system CPU time (psutil, every thread) of the "
        f"master and all workers over {r['window_s']:.0f} s. Then {r['connections']} sequential "
        "`Connection: close` requests to /hello; wake-ups = voluntary context switches of the workers' "
        "main threads (each blocked in its accept wait), minus those of an idle window as long. A "
        "worker that serves a connection switches about twice (woken, then blocking on the socket "
        "read); every other worker woken for nothing adds one. Before the accept wait used "
        "EPOLLEXCLUSIVE (a poll on the listeners in every worker), 32 idle workers made 30.75 here.",
        "",
        "| workers | window | CPU, master + workers | % of one core | target | wake-ups per connection | other load |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        f"| {r['workers']} | {r['window_s']:.0f} s | {r['cpu_s'] * 1000:.0f} ms | {pct:.2f}% "
        f"| {'PASS' if pct < 1 else 'MISS'} | {r['switches_per_connection']:.2f} | {r.get('other_cpu', 0):.0%} |",
    ])


def markdown(res: dict[str, Any]) -> str:
    if "worker_start" not in res:  # `--only idle` on a results file without the rest
        return idle_markdown(res["idle"])
    ws, cpu, g = res["worker_start"], res["cpu"], res["graceful"]
    med, mx = ws["median"], ws["max"]
    fr = med["fork_to_ready_ms"]
    lines = [
        "### Worker start with the 26 MB CPython module (target: fork to ready <= 20 ms)",
        "",
        f"Pool of one worker (StartServers 1, MaxRequestWorkers 1, LogLevel debug), `/py` = CPython for "
        f"WASI. The worker is SIGKILLed {ws['reps']} times; the driver polls the master's children "
        "every 1 ms. fork = the master's debug line \"forked worker PID into slot N\" (microsecond "
        "timestamp); ready = the new worker's title reads `prefork-wasm: worker [idle]`; first /py = "
        "the next request, the new worker's first.",
        "",
        "| | median | max |",
        "| --- | ---: | ---: |",
        f"| kill -> fork (master: SIGCHLD, reap, fork) | {_f(med['kill_to_fork_ms'])} ms "
        f"| {_f(mx['kill_to_fork_ms'])} ms |",
        f"| kill -> new child visible (1 ms polling) | {_f(med['kill_to_child_seen_ms'])} ms "
        f"| {_f(mx['kill_to_child_seen_ms'])} ms |",
        f"| **fork -> ready** | **{_f(fr)} ms** | {_f(mx['fork_to_ready_ms'])} ms |",
        f"| kill -> ready | {_f(med['kill_to_ready_ms'])} ms | {_f(mx['kill_to_ready_ms'])} ms |",
        f"| first /py request on the new worker | {_f(med['first_request_ms'])} ms | {_f(mx['first_request_ms'])} ms |",
        "",
        f"Target fork -> ready <= 20 ms: **{'PASS' if fr is not None and fr <= 20 else 'MISS'}**.",
        "",
        "### Supervision cost at 32 idle workers (target: <= 2% of one core)",
        "",
        "StartServers 32, MaxRequestWorkers 32, ServerLimit 64; the master's user+system CPU time "
        "(psutil) over the window, all workers idle. The master reads every worker's RSS once a "
        "second (/proc/PID/statm, into the scoreboard) and the MemoryMetric figure (`uss`, `pss`: "
        "/proc/PID/smaps, costly) only for a worker whose RSS is above its soft limit, since "
        "USS <= PSS <= RSS. Before that prefilter, `uss` cost 2.10% of a core here. The last "
        "column is the idle workers' own CPU, all 32 together, % of one core (target < 1%): their "
        "watcher threads block while no guest runs (an epoch ticker at 100 Hz cost 12-21% here).",
        "",
        "| MaxMemoryPerChild | MemoryMetric | window | master CPU | % of one core | target | other load | workers |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in cpu:
        pct = r["master_cpu_pct_of_core"]
        workers_pct = r.get("workers_cpu_pct_of_core")
        lines.append(f"| {r['max_memory_per_child']} | {r['memory_metric']} | {r['window_s']:.0f} s "
                     f"| {r['master_cpu_s'] * 1000:.0f} ms | {pct:.2f}% | {'PASS' if pct <= 2 else 'MISS'} "
                     f"| {r.get('other_cpu', 0):.0%} | {'-' if workers_pct is None else f'{workers_pct:.2f}%'} |")
    s, d = g["steady"], g["restarting"]
    ratio = g["p99_ratio"]
    lines += ["", "other load = share of the machine's CPU used by processes not started by the benchmark "
              "meanwhile (psutil counts CPU time in 10 ms ticks: a 20 s window resolves 0.05%)."]
    lines += [
        "",
        "### Graceful restart under load (targets: p99 <= 3x steady, 0 errors)",
        "",
        f"hello.wasm, {g['workers']} workers (fixed pool; ServerLimit {g.get('server_limit', '?')} so the new "
        f"generation has scoreboard slots while the old one finishes its connections), wrk -t2 "
        f"-c{g['connections']} keep-alive (connections = workers, so none waits in the queue), "
        f"{g['seconds']:g} s steady, then "
        f"{g['seconds']:g} s with SIGUSR1 (graceful restart) to the master every "
        f"{g['restart_every_s']:g} s ({g['restarts']} restarts). errors = wrk's socket errors plus "
        "responses with status >= 400.",
        "",
        "| run | req/s | p50 | p99 | max | errors | other load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| steady | {s['rps']:,.0f} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | {s['max_ms']:.1f} ms "
        f"| {s['errors']} | {s.get('other_cpu', 0):.0%} |",
        f"| restarting | {d['rps']:,.0f} | {d['p50_ms']:.2f} ms | {d['p99_ms']:.2f} ms | {d['max_ms']:.1f} ms "
        f"| {d['errors']} | {d.get('other_cpu', 0):.0%} |",
        "",
        f"p99 restarting / steady: **{_f(ratio, '.2f')}x** "
        f"({'PASS' if ratio is not None and ratio <= 3 else 'MISS'}); errors during restarts: "
        f"**{d['errors']}** ({'PASS' if d['errors'] == 0 else 'MISS'}).",
    ]
    if "idle" in res:
        lines += ["", idle_markdown(res["idle"])]
    return "\n".join(lines)
