"""scripts/bench: prefork-wasm against its peers with wrk, in interleaved rounds.

Run through scripts/bench, which installs wrk, apache2 and the bench venv first.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from . import held, interpreter, peers, procs, profile, proxy, report, supervision, tls, wrk

RESULTS = peers.ROOT / "benchmarks" / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="2 rounds of 3 s, sweep of 2 s per point; writes results/quick.* (not latest.*)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 6, quick 2)")
    p.add_argument("--duration", type=float, help="seconds per wrk run in a round (default 10, quick 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk -c for the rounds (default 16)")
    p.add_argument("--workers", type=int, default=4, help="worker processes per server (default 4)")
    p.add_argument("--max-keepalive", type=int, default=0,
                   help="MaxKeepAliveRequests for Apache and prefork-wasm (default 0 = unlimited)")
    p.add_argument("--systems", default=",".join(peers.SYSTEMS),
                   help=f"comma-separated subset of: {', '.join(peers.SYSTEMS)}")
    p.add_argument("--sweep", default="1,2,4,8,16,32,64", help="connection counts for the plot")
    p.add_argument("--sweep-duration", type=float, help="seconds per sweep point (default 3, quick 2)")
    p.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep and the plot")
    p.add_argument("--no-held", action="store_true",
                   help="skip prefork-wasm's held-connection figures (wrk -c256, -c1000; idle connections' memory)")
    p.add_argument("--interpreter", action="store_true",
                   help="also run the same Python CGI script as CPython-for-WASI core module and as a "
                        "componentize-py component: req/s, p50/p99, start-up, first request, worker memory")
    p.add_argument("--interpreter-pools", default="2,8,32", help="pool sizes for --interpreter")
    p.add_argument("--supervision", action="store_true",
                   help="also measure the master: worker start (fork to ready) with the CPython module, "
                        "its CPU at 32 idle workers with memory sampling, graceful restarts under load")
    p.add_argument("--proxy", action="store_true",
                   help="also serve the wasi:http proxy app (examples/wasm/proxy.wasm) under prefork-wasm and "
                        "under `wasmtime serve`: hello at -c16 and -c1, a 64 KiB POST echo at -c1")
    p.add_argument("--tls", action="store_true",
                   help="also measure HTTPS against Apache prefork + mod_ssl (same certificates, ECDSA "
                        "P-256 and RSA 2048): new TLS connections per second, HTTPS against plain HTTP "
                        "keep-alive")
    p.add_argument("--only", choices=["supervision", "idle", "interpreter", "proxy", "tls"],
                   help="measure only this section and merge it into the existing results .json/.md "
                        "(benchmarks/results/NAME.json must exist; the peer results are kept); "
                        "idle: just the idle cost of 32 workers (CPU, wake-ups per connection); "
                        "tls: written to results/tls.json/.md of its own unless --name is given")
    p.add_argument("--load-seconds", type=float,
                   help="seconds of wrk load per pool for --interpreter (default 4, quick 2)")
    p.add_argument("--profile", action="store_true", help="also py-spy one prefork-wasm worker under load")
    p.add_argument("--name", help="results file stem in benchmarks/results (default latest; --quick: quick; "
                                   "--only tls: tls)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to use < 10%% of the CPU")
    p.add_argument("--retry-above", type=float, default=0.15, metavar="SHARE",
                   help="run a wrk run again when other processes took more than SHARE of the "
                        "CPU meanwhile (default 0.15)")
    p.add_argument("--retries", type=int, default=2, help="at most this many extra attempts (default 2)")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="measure nothing: rewrite the .md and .png from a results .json")
    p.add_argument("--keep-dir", action="store_true", help="keep the temp folder (configs, logs)")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (2 if a.quick else 6)
    a.duration = a.duration or (3.0 if a.quick else 10.0)
    a.sweep_duration = a.sweep_duration or (2.0 if a.quick else 3.0)
    a.name = a.name or ("tls" if a.only == "tls" else "quick" if a.quick else "latest")
    a.load_seconds = a.load_seconds or (2.0 if a.quick else 4.0)
    a.system_keys = [k.strip() for k in a.systems.split(",") if k.strip()]
    unknown = set(a.system_keys) - set(peers.SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    return a


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally that stops every server


def wait_workers(system: peers.System, n: int, timeout: float = 60) -> None:
    """gunicorn answers as soon as its first worker is up: wait for the whole pool."""
    assert system.proc is not None
    system.proc.wait_until(lambda: len(system.worker_pids()) >= n, timeout, f"{system.key}: {n} workers",
                           interval=0.1)


def all_pids(systems: list[peers.System]) -> list[int]:
    return [p for s in systems if s.proc for p in [s.proc.pid, *s.worker_pids()]]


def measured_run(systems: list[peers.System], url: str, connections: int, seconds: float,
                 close: bool, retry_above: float = 1.0, retries: int = 0) -> dict[str, Any]:
    """wrk.least_disturbed with every server's processes counted as ours."""
    if any(s.url == url and s.key in report.CPU_UNACCOUNTED for s in systems):
        retries = 0  # its own CGI programs would count as other load and trigger retries
    return wrk.least_disturbed(url, connections, seconds, close, all_pids(systems), retry_above, retries)


def pool_memory(system: peers.System) -> dict[str, float]:
    return interpreter.memory([psutil.Process(pid) for pid in system.worker_pids()])


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def measure_peers(args: argparse.Namespace, systems: list[peers.System], run_dir: Path,
                  data: dict[str, Any]) -> None:
    """Start every system, run the interleaved rounds and the sweep, fill `data`."""
    cpu_start = report.cpu_snapshot()
    peers.prepare_dir(run_dir)
    for s in systems:
        peers.start(s, run_dir, args.workers, args.max_keepalive)
        wait_workers(s, args.workers)
        log(f"{s.key} up on 127.0.0.1:{s.port} in {s.start_seconds:.2f}s, workers {s.worker_pids()}")
    time.sleep(1.0)
    for s in systems:
        data["servers"][s.key] = {"port": s.port, "start_s": s.start_seconds, "memory_start": pool_memory(s)}

    warm = 1.0 if args.quick else 2.0
    log(f"warm-up, {warm:g}s per system and mode")
    for s in systems:
        for close in (False, True):
            wrk.run(s.url, args.connections, warm, close)

    # Interleaved rounds: each round visits every system (rotated start, alternating mode
    # order), so slow drifts of the machine hit every system alike.
    for rnd in range(args.rounds):
        order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
        modes = ("keep-alive", "close") if rnd % 2 == 0 else ("close", "keep-alive")
        for s in order:
            for mode in modes:
                r = measured_run(systems, s.url, args.connections, args.duration,
                                 close=(mode == "close"), retry_above=args.retry_above,
                                 retries=args.retries)
                r.update(system=s.key, mode=mode, round=rnd + 1)
                data["runs"].append(r)
                log(f"round {rnd + 1}/{args.rounds} {s.key:14} {mode:10} {r['rps']:9,.0f} req/s "
                    f"p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:8.2f} ms errors {r['errors']} "
                    f"stalled {r['stalled']} other-CPU {r['foreign_cpu']:.0%}")
                if s.key == report.REFERENCE and mode == "keep-alive" and args.connections != report.SCALING_FEWER:
                    # The scaling goal's other side, in the same round: a paired ratio, as for the peers.
                    r = measured_run(systems, s.url, report.SCALING_FEWER, args.duration, close=False,
                                     retry_above=args.retry_above, retries=args.retries)
                    r.update(system=s.key, mode=mode, round=rnd + 1)
                    data["scaling"].append(r)
                    log(f"round {rnd + 1}/{args.rounds} {s.key:14} {mode:10} {r['rps']:9,.0f} req/s "
                        f"at -c{report.SCALING_FEWER}")

    if not args.no_sweep:
        levels = [int(c) for c in args.sweep.split(",")]
        for c in levels:
            for s in systems:
                r = measured_run(systems, s.url, c, args.sweep_duration, close=False,
                                 retry_above=args.retry_above, retries=args.retries)
                r.update(system=s.key, mode="keep-alive")
                data["sweep"].append(r)
                log(f"sweep c={c:<3} {s.key:14} {r['rps']:9,.0f} req/s stalled {r['stalled']}")
        if 1 in levels:  # one connection with `Connection: close` too, for the -c1 targets
            for s in systems:
                r = measured_run(systems, s.url, 1, args.sweep_duration, close=True,
                                 retry_above=args.retry_above, retries=args.retries)
                r.update(system=s.key, mode="close")
                data["sweep"].append(r)
                log(f"sweep c=1   {s.key:14} {r['rps']:9,.0f} req/s (close)")

    pw = next((s for s in systems if s.key == report.REFERENCE), None)
    if pw is not None and not args.no_held:
        log(f"held connections: prefork-wasm at -c{' and -c'.join(map(str, held.CROWDS))}, "
            f"and the memory of {held.IDLE:,} idle ones")
        idle = held.idle_memory(pw)  # first: after the crowds the workers' heaps have grown already
        data["held"] = {"idle": idle, "crowds": held.crowds(pw, args.sweep_duration)}
        for r in data["held"]["crowds"]:
            log(f"held c={r['connections']:<5} {r['mode']:10} {r['rps']:9,.0f} req/s errors {r['errors']}")
        log(f"held idle: {data['held']['idle']['mb_per_1000']:.2f} MB per 1,000")

    if args.profile and any(s.key == report.REFERENCE for s in systems):
        pw = next(s for s in systems if s.key == report.REFERENCE)
        spy = peers.BENCH_VENV / "bin" / "py-spy"
        log("profiling one prefork-wasm worker under load (py-spy)")
        prof = profile.profile_worker(spy, pw.url, pw.worker_pids()[0], run_dir / "profile.raw",
                                      seconds=4 if args.quick else 8, connections=args.connections)
        data["profile"] = prof

    for s in systems:
        info = data["servers"][s.key]
        info["memory_end"] = pool_memory(s)
        info["access_log_lines"] = count_lines(run_dir / f"{s.key}.access.log")
    for s in systems:
        s.proc.stop()
    # Only now (servers reaped) does our children's CPU time include the servers'.
    data["load"] = report.foreign_load(cpu_start, report.cpu_snapshot())
    for s in systems:
        err = run_dir / f"{s.key}.error.log"
        data["servers"][s.key]["error_log_tail"] = s.proc.tail(5) if not err.exists() else \
            "\n".join(err.read_text(errors="replace").splitlines()[-5:])

    if args.interpreter:
        log("interpreter section (CPython for WASI: core module and component)")
        data["interpreter"] = measure_interpreter(args, run_dir)
    if args.proxy:
        log("proxy section (wasi:http: prefork-wasm and wasmtime serve)")
        data["proxy"] = measure_proxy(args, run_dir)
    if args.tls:
        log("TLS section (prefork-wasm and Apache + mod_ssl over HTTPS)")
        data["tls"] = measure_tls(args, run_dir)
    if args.supervision:
        log("supervision section (worker start, master CPU, graceful restart)")
        data["supervision"] = supervision.run(run_dir, quick=args.quick)


def measure_interpreter(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    pools = [int(n) for n in args.interpreter_pools.split(",")]
    source = peers.versions()["prefork-wasm source"]
    measured = interpreter.run(run_dir, pools, args.load_seconds, args.retry_above, args.retries)
    return measured | {"machine": report.machine(), "prefork_wasm_source": source}


def measure_proxy(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    source = peers.versions()["prefork-wasm source"]
    measured = proxy.run(run_dir, args.rounds, args.duration, args.workers)
    return measured | {"machine": report.machine(), "prefork_wasm_source": source}


def measure_tls(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    source = peers.versions()["prefork-wasm source"]
    measured = tls.run(run_dir, args.rounds, args.duration, args.workers, args.connections, args.max_keepalive,
                       args.retry_above, args.retries, warm=1.0 if args.quick else 2.0)
    return measured | {"machine": report.machine(), "prefork_wasm_source": source}


def tls_alone(args: argparse.Namespace) -> int:
    """`--only tls` without --name: a results file of its own (results/tls.json/.md), measured
    with this command line's settings."""
    log("measuring only: tls")
    cpu_start = report.cpu_snapshot()
    try:
        with procs.run_folder(args.keep_dir, log) as run_dir:
            section = measure_tls(args, run_dir)
    except KeyboardInterrupt:
        log("interrupted, stopping the servers")
        return 130
    load = report.foreign_load(cpu_start, report.cpu_snapshot())
    data = {"machine": section["machine"], "versions": peers.versions(), "load": load, "tls": section}
    stem = RESULTS / args.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    m = data["machine"]
    md = [f"# Benchmark: HTTPS, prefork-wasm and Apache prefork + mod_ssl ({args.name})", "",
          f"- date: {m['date']}",
          f"- machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}, {m['os']}",
          "- versions: " + "; ".join(f"{k} {val}" for k, val in data["versions"].items()),
          f"- other load on the machine during the section: {load['foreign_cpu_share']:.0%} of all CPU time "
          f"used by processes not started by the benchmark; steal {load['steal_share']:.0%}; load average "
          f"{load['loadavg_start']:.2f} at start, {load['loadavg_end']:.2f} at end (each row gives its own)",
          "", "## Results", "", tls.markdown(section)]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print()
    print(tls.targets_text(section["targets"]))
    print(f"bench: wrote {stem.with_suffix('.md')}, {stem.with_suffix('.json')}")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        args.name = args.name if "--name" in argv else args.from_json.stem
        for k, v in data["settings"].items():
            setattr(args, k, v)
        write_results(args, data, data["labels"])
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    if args.wait_quiet:
        share = report.wait_quiet(args.wait_quiet, log)
        log(f"other processes use {share:.0%} of the CPU; starting")
    if args.only == "tls" and "--name" not in " ".join(argv):
        return tls_alone(args)
    if args.only:
        return only_section(args, argv)
    systems = peers.make(args.system_keys)
    labels = {s.key: s.label for s in systems}
    data: dict[str, Any] = {
        "machine": report.machine(),
        "versions": peers.versions(),
        "settings": {k: getattr(args, k) for k in (
            "quick", "rounds", "duration", "connections", "workers", "max_keepalive", "sweep",
            "sweep_duration", "system_keys", "retry_above", "retries")},
        "labels": labels,
        "runs": [], "scaling": [], "sweep": [], "servers": {},
    }
    try:
        with procs.run_folder(args.keep_dir, log) as run_dir:
            measure_peers(args, systems, run_dir, data)
    except KeyboardInterrupt:
        log("interrupted, stopping the servers")
        return 130

    write_results(args, data, labels)
    return 0


def only_section(args: argparse.Namespace, argv: list[str]) -> int:
    """`--only SECTION`: measure that section alone, merge it into NAME.json,
    re-render (`idle` replaces only the idle figures of the supervision section)."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        log(f"{path} does not exist: run the full benchmark first (or pick --name)")
        return 1
    data = json.loads(path.read_text())
    quick = args.quick
    # The results' settings describe its other sections; a section measured now takes the
    # rounds and duration given on this command line, if any.
    given = {k: getattr(args, k) for k in ("rounds", "duration") if any(a.startswith(f"--{k}") for a in argv)}
    for k, v in data["settings"].items():
        setattr(args, k, v)
    log(f"measuring only: {args.only}")
    try:
        with procs.run_folder(args.keep_dir, log) as run_dir:
            if args.only == "interpreter":
                data["interpreter"] = measure_interpreter(args, run_dir)
            elif args.only == "proxy":
                data["proxy"] = measure_proxy(argparse.Namespace(**{**vars(args), **given}), run_dir)
            elif args.only == "tls":
                data["tls"] = measure_tls(argparse.Namespace(**{**vars(args), **given}), run_dir)
            else:
                measure_supervision(args.only, quick, run_dir, data)
    except KeyboardInterrupt:
        log("interrupted, stopping the servers")
        return 130
    write_results(args, data, data["labels"])
    return 0


def measure_supervision(only: str, quick: bool, run_dir: Path, data: dict[str, Any]) -> None:
    measured = supervision.run(run_dir, quick=quick, idle_only=only == "idle")
    source = peers.versions()["prefork-wasm source"]
    measured["idle"] |= {"date": report.machine()["date"], "prefork_wasm_source": source}
    if only == "idle":
        data["supervision"] = {**data.get("supervision", {}), **measured}
    else:
        data["supervision"] = measured | {"machine": report.machine(), "prefork_wasm_source": source}


def write_results(args: argparse.Namespace, data: dict[str, Any], labels: dict[str, str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = report.summarize(data["runs"], labels)
    checks = report.targets(rows, data["runs"], data["sweep"], held.targets(data["held"]) if "held" in data else [],
                            data.get("scaling", []))
    data["summary"] = [r.__dict__ | {"spread": r.spread} for r in rows]
    data["targets"] = checks
    m, v = data["machine"], data["versions"]
    load = data.get("load") or {"foreign_cpu_share": 0.0, "steal_share": 0.0, "loadavg_start": 0.0,
                                "loadavg_end": 0.0}
    title = (f"prefork-wasm and peers, {args.workers} workers each, wrk keep-alive "
             f"({m['date']}, {m['nproc']} x {m['cpu']}, Linux {m['kernel']})")
    stem = RESULTS / args.name
    if data["sweep"]:
        report.plot(data["sweep"], labels, stem.with_suffix(".png"), title)
    (stem.with_suffix(".json")).write_text(json.dumps(data, indent=1, default=str) + "\n")
    table = report.table(rows)
    targets = report.targets_text(checks)
    md = [
        f"# Benchmark: prefork-wasm and its peers ({args.name})",
        "",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}, {m['os']}",
        "- versions: " + "; ".join(f"{k} {val}" for k, val in v.items()),
        f"- other load on the machine during the rounds and sweep: {load['foreign_cpu_share']:.0%} of all "
        f"CPU time used by processes not started by the benchmark; steal {load['steal_share']:.0%}; "
        f"load average {load['loadavg_start']:.2f} at start, {load['loadavg_end']:.2f} at end",
        f"- settings: {args.workers} worker processes each, wrk -t2 -c{args.connections} "
        f"-d{args.duration:g}s, {args.rounds} interleaved rounds (medians), keep-alive and "
        f"`Connection: close`; MaxKeepAliveRequests {args.max_keepalive} (0 = unlimited) for "
        "Apache and prefork-wasm; every server writes a combined-format access log",
        "",
        "## Results",
        "",
        table,
        "",
        "spread = (max - min) / median of the rounds' req/s. errors = wrk's socket errors plus "
        "responses with status >= 400, summed over the rounds. stalled conns = wrk connections "
        "that got no byte for >= 2 s (from `ss` near the end of each run; wrk itself never reports "
        "them), the highest count in any round. \"vs pw\" = the figure divided by prefork-wasm's "
        "in the same mode. other CPU = median share of the machine's CPU that processes not "
        "started by the benchmark used during those runs (a shared machine skews figures; n/a for "
        "mod_cgid, whose CGI programs this accounting cannot see, so they would count as other load). "
        "gunicorn's sync workers close every connection, so its keep-alive rows "
        "are connection-per-request too.",
        "",
        "## Targets (prefork-wasm)",
        "",
        "Throughput ratios are paired: the median over rounds of prefork-wasm's req/s over the "
        "peer's in the same round (steadier on a shared machine); the ratio of the table's "
        "medians follows in parentheses.",
        "",
        "```",
        targets,
        "```",
    ]
    if data["sweep"]:
        md += ["", "## Concurrency sweep (keep-alive, req/s)", "",
               f"![req/s against connections]({stem.with_suffix('.png').name})", "",
               report.sweep_table(data["sweep"], labels)]
    if "held" in data:
        md += ["", "## Held connections (prefork-wasm)", "", held.markdown(data["held"])]
    md += ["", "## Worker memory (median per worker, MiB)", "",
           "| system | USS at start | PSS at start | USS at end | PSS at end | access log lines |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, info in data["servers"].items():
        a, b = info.get("memory_start", {}), info.get("memory_end", {})
        md.append(f"| {labels[key]} | {a.get('uss_mib', 0):.1f} | {a.get('pss_mib', 0):.1f} "
                  f"| {b.get('uss_mib', 0):.1f} | {b.get('pss_mib', 0):.1f} | {info.get('access_log_lines', 0):,} |")
    if "profile" in data:
        md += ["", "## Profile of one prefork-wasm worker under load", "", "```",
               profile.profile_text(data["profile"]), "```"]
    if "interpreter" in data:
        py = data["interpreter"]
        when = f" (measured {py['machine']['date']}, source {py['prefork_wasm_source']})" if "machine" in py else ""
        md += ["", f"## Python: CPython for WASI as a core module and as a component{when}", "",
               interpreter.markdown(py)]
    if "proxy" in data:
        px = data["proxy"]
        md += ["", f"## wasi:http: prefork-wasm and wasmtime serve (measured {px['machine']['date']}, "
               f"source {px['prefork_wasm_source']})", "", proxy.markdown(px)]
    if "tls" in data:
        sec = data["tls"]
        md += ["", f"## HTTPS: prefork-wasm and Apache prefork + mod_ssl (measured {sec['machine']['date']}, "
               f"source {sec['prefork_wasm_source']})", "", tls.markdown(sec)]
    if "supervision" in data:
        sup = data["supervision"]
        when = f" (measured {sup['machine']['date']}, source {sup['prefork_wasm_source']})" if "machine" in sup else ""
        md += ["", f"## Supervision: worker start, master CPU, graceful restart{when}", "",
               supervision.markdown(sup)]
    (stem.with_suffix(".md")).write_text("\n".join(md) + "\n")

    print()
    print(table)
    print()
    print("Targets (prefork-wasm):")
    print(targets)
    if "profile" in data:
        print()
        print(profile.profile_text(data["profile"]))
    print()
    if load["foreign_cpu_share"] > 0.05:
        print(f"bench: warning: {load['foreign_cpu_share']:.0%} of the CPU went to other processes "
              "during the run: the figures are skewed")
    print(f"bench: wrote {stem.with_suffix('.md')}, {stem.with_suffix('.json')}"
          + (f", {stem.with_suffix('.png')}" if data["sweep"] else ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
