"""Summaries of the raw wrk runs: the table, the target checks, the plot, machine facts."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REFERENCE = "prefork-wasm"
# Systems whose own CPU the "other CPU" accounting cannot see in full: mod_cgid's daemon does
# not collect its CGI programs as waited-for children, so their CPU looks like someone else's.
CPU_UNACCOUNTED = {"apache-cgid"}
MODES = ("keep-alive", "close")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "os": os_name,
        "memory_gib": round(mem_kb / 1048576, 1),
        "python": platform.python_version(),
    }


def cpu_snapshot(live_pids: list[int] | None = None) -> dict[str, float]:
    """CPU seconds so far: the whole machine (busy, steal), this process with its reaped
    children (wrk, ss, stopped servers), and `live_pids` (running servers, with the CPU of
    the children they reaped, e.g. CGI programs)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = cpu_of(live_pids or [])
    return {
        "wall": time.monotonic(),
        "busy": (user + nice + system + irq + softirq) / hz,
        "steal": steal / hz,
        "ours": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live,
        "loadavg": os.getloadavg()[0],
    }


def cpu_of(pids: list[int]) -> float:
    """CPU seconds that the running processes `pids` used so far, with their reaped children's."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def foreign_load(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """Share of the machine's CPU used by processes that are not ours between two snapshots
    (other work on a shared machine skews every figure), and the hypervisor's steal."""
    wall = (end["wall"] - start["wall"]) * (os.cpu_count() or 1)
    foreign = (end["busy"] - start["busy"]) - (end["ours"] - start["ours"])
    return {
        "foreign_cpu_share": max(0.0, foreign / wall) if wall else 0.0,
        "steal_share": (end["steal"] - start["steal"]) / wall if wall else 0.0,
        "loadavg_start": start["loadavg"],
        "loadavg_end": end["loadavg"],
    }


def wait_quiet(limit: float, log: Callable[[str], None], threshold: float = 0.10) -> float:
    """Wait (up to `limit` s) until other processes use < threshold of the CPU over 5 s."""
    deadline = time.monotonic() + limit
    while True:
        before = cpu_snapshot()
        time.sleep(5)
        share = foreign_load(before, cpu_snapshot())["foreign_cpu_share"]
        if share < threshold or time.monotonic() >= deadline:
            return share
        log(f"machine busy ({share:.0%} of CPU used by other processes), waiting")


@dataclass
class Row:
    system: str
    label: str
    mode: str
    rps: float
    rps_min: float
    rps_max: float
    p50: float
    p99: float
    errors: int
    stalled: int
    rounds: int
    foreign: float  # median share of CPU taken by other processes during these runs

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds' req/s."""
        return (self.rps_max - self.rps_min) / self.rps if self.rps else 0.0


def summarize(runs: list[dict[str, Any]], labels: dict[str, str]) -> list[Row]:
    rows = []
    for system in labels:
        for mode in MODES:
            mine = [r for r in runs if r["system"] == system and r["mode"] == mode]
            if not mine:
                continue
            rps = [r["rps"] for r in mine]
            rows.append(Row(
                system, labels[system], mode,
                rps=statistics.median(rps), rps_min=min(rps), rps_max=max(rps),
                p50=statistics.median(r["p50_ms"] for r in mine),
                p99=statistics.median(r["p99_ms"] for r in mine),
                errors=sum(int(r["errors"]) for r in mine),
                stalled=max(int(r["stalled"]) for r in mine),
                rounds=len(mine),
                foreign=statistics.median(r.get("foreign_cpu", 0.0) for r in mine),
            ))
    return rows


def _ratio(value: float, ref: float) -> str:
    return f"{value / ref:.2f}x" if ref else "n/a"


def table(rows: list[Row]) -> str:
    ref = {r.mode: r for r in rows if r.system == REFERENCE}
    out = [
        "| system | mode | req/s (median) | spread | p50 ms | p99 ms | errors | stalled conns "
        "| req/s vs pw | p50 vs pw | p99 vs pw | other CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (MODES.index(r.mode), r.system != REFERENCE)):
        base = ref.get(r.mode)
        out.append(
            f"| {r.label} | {r.mode} | {r.rps:,.0f} | {r.spread:.0%} | {r.p50:.2f} | {r.p99:.2f} "
            f"| {r.errors} | {r.stalled} "
            f"| {_ratio(r.rps, base.rps) if base else 'n/a'} | {_ratio(r.p50, base.p50) if base else 'n/a'} "
            f"| {_ratio(r.p99, base.p99) if base else 'n/a'} "
            f"| {'n/a' if r.system in CPU_UNACCOUNTED else f'{r.foreign:.0%}'} |"
        )
    return "\n".join(out)


def paired_ratio(runs: list[dict[str, Any]], mode: str, peer: str) -> float | None:
    """Median over rounds of prefork-wasm's req/s divided by the peer's in the same round.

    Both runs of a round are minutes apart at most, so load from elsewhere on a shared
    machine that comes and goes between rounds cancels out better than in a ratio of medians.
    """
    def by_round(system: str) -> dict[int, float]:
        return {r["round"]: r["rps"] for r in runs if r["system"] == system and r["mode"] == mode}

    mine, theirs = by_round(REFERENCE), by_round(peer)
    ratios = [mine[k] / theirs[k] for k in mine.keys() & theirs.keys() if theirs[k]]
    return statistics.median(ratios) if ratios else None


# The competent gunicorn + wasmtime-py peers (benchmarks/apps/wasm_hello.py), sync and gthread.
WASM_PEERS = {"gunicorn-wasm": "gunicorn sync+wasmtime", "gunicorn-wasm-gthread": "gunicorn gthread+wasmtime"}
PEER_GOAL_C16 = 1.5
# Held connections' goals (issue 18), stricter, against the sync peer at -c16.
HELD_GOALS = {"keep-alive": 2.0, "close": 1.7}
PEER_GOAL_C1 = 1.3
P99_OVER_P50 = 3.0


def _c1_ratio(sweep: list[dict[str, Any]], mode: str, peer: str) -> float | None:
    """prefork-wasm's req/s over the peer's at one connection (the sweep's c=1 runs)."""
    rps = {s["system"]: s["rps"] for s in sweep if s["connections"] == 1 and s.get("mode", "keep-alive") == mode}
    mine, theirs = rps.get(REFERENCE), rps.get(peer)
    return mine / theirs if mine and theirs else None


# The scaling goal (issue 18): keep-alive at the rounds' -c16 at least as fast as at this many
# connections, one per worker.
SCALING_FEWER = 4


def _scaling(runs: list[dict[str, Any]], fewer: list[dict[str, Any]]) -> float | None:
    """Median over rounds of prefork-wasm's keep-alive req/s in the round's run over its run at
    SCALING_FEWER connections in the same round (paired, as the peers' ratios are)."""
    many = {r["round"]: r["rps"] for r in runs if r["system"] == REFERENCE and r["mode"] == "keep-alive"}
    few = {r["round"]: r["rps"] for r in fewer}
    ratios = [many[k] / few[k] for k in many.keys() & few.keys() if few[k]]
    return statistics.median(ratios) if ratios else None


def targets(rows: list[Row], runs: list[dict[str, Any]], sweep: list[dict[str, Any]] | None = None,
            more: Sequence[tuple[str, float | None, float, str]] = (),
            fewer: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The project's goals, each with its value, goal and PASS or MISS (n/a if a peer is missing).

    Throughput goals at -c16 are judged on the paired (per-round) ratio; the ratio of the
    table's medians is given beside it. The -c1 goals come from the sweep's one-connection runs.
    `more`: other sections' goals, as (name, value, goal, kind). `fewer`: prefork-wasm's
    keep-alive runs at SCALING_FEWER connections, one per round.
    """
    get = {(r.system, r.mode): r for r in rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, goal: float, kind: str, **extra: Any) -> None:
        ok = value is not None and {">=": value >= goal, "<=": value <= goal, "==": value == goal}[kind]
        checks.append({"target": name, "value": value, "goal": goal, "kind": kind, **extra,
                       "verdict": "n/a" if value is None else ("PASS" if ok else "MISS")})

    def ratio(name: str, mode: str, peer: str, goal: float) -> None:
        a, b = get.get((REFERENCE, mode)), get.get((peer, mode))
        of_medians = a.rps / b.rps if a and b and b.rps else None
        check(name, paired_ratio(runs, mode, peer) if a and b else None, goal, ">=", of_medians=of_medians)

    for peer, name in WASM_PEERS.items():
        ratio(f"keep-alive req/s vs {name} (-c16)", "keep-alive", peer, PEER_GOAL_C16)
        ratio(f"Connection: close req/s vs {name} (-c16)", "close", peer, PEER_GOAL_C16)
    for mode, goal in HELD_GOALS.items():
        ratio(f"{mode} req/s vs {WASM_PEERS['gunicorn-wasm']} (-c16), held connections' goal", mode,
              "gunicorn-wasm", goal)
    for peer, name in WASM_PEERS.items():
        for mode in MODES:
            check(f"{mode} req/s vs {name} (-c1)", _c1_ratio(sweep or [], mode, peer), PEER_GOAL_C1, ">=")
    check(f"keep-alive req/s at the rounds' connections over -c{SCALING_FEWER} (paired per round)",
          _scaling(runs, fewer or []), 1.0, ">=")
    ratio("keep-alive req/s vs Apache+mod_cgi", "keep-alive", "apache-cgi", 5.0)
    ratio("keep-alive req/s vs Apache+mod_cgid (same goal, no mod_cgi stall)", "keep-alive", "apache-cgid", 5.0)
    ratio("keep-alive req/s vs Apache static (goal)", "keep-alive", "apache-static", 0.25)
    ratio("Connection: close req/s vs Apache static (goal)", "close", "apache-static", 0.25)
    for mode in MODES:
        r = get.get((REFERENCE, mode))
        check(f"{mode}: p99 / p50", r.p99 / r.p50 if r and r.p50 else None, P99_OVER_P50, "<=")
    mine = [r for r in rows if r.system == REFERENCE]
    errors = sum(r.errors + r.stalled for r in mine) if mine else None
    check("errors + stalled connections (all rounds, both modes)", errors, 0, "==")
    for name, value, goal, kind in more:
        check(name, value, goal, kind)
    return checks


def targets_text(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        v = c["value"]
        shown = "n/a" if v is None else (f"{v}" if isinstance(v, int) else f"{v:.2f}")
        extra = f", ratio of medians {c['of_medians']:.2f}" if c.get("of_medians") is not None else ""
        lines.append(f"{c['verdict']:4}  {c['target']}: {shown} (goal {c['kind']} {c['goal']}{extra})")
    return "\n".join(lines)


def keep_alive_sweep(sweep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's keep-alive points (the plot and its table; c=1 has a close point too)."""
    return [s for s in sweep if s.get("mode", "keep-alive") == "keep-alive"]


def sweep_table(sweep: list[dict[str, Any]], labels: dict[str, str]) -> str:
    sweep = keep_alive_sweep(sweep)
    levels = sorted({s["connections"] for s in sweep})
    out = ["| system | " + " | ".join(f"c={c}" for c in levels) + " |",
           "| --- |" + " ---: |" * len(levels)]
    for system, label in labels.items():
        cells = []
        for c in levels:
            hit = [s for s in sweep if s["system"] == system and s["connections"] == c]
            if not hit:
                cells.append("")
                continue
            stalled = hit[0]["stalled"]
            cells.append(f"{hit[0]['rps']:,.0f}" + (f" ({stalled} stalled)" if stalled else ""))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(sweep: list[dict[str, Any]], labels: dict[str, str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    sweep = keep_alive_sweep(sweep)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for system, label in labels.items():
        pts = sorted((s["connections"], s["rps"]) for s in sweep if s["system"] == system)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linewidth=2.5 if system == REFERENCE else 1.5, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # static Apache and mod_cgi are two orders of magnitude apart
    levels = sorted({s["connections"] for s in sweep})
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent connections (wrk -c, keep-alive)")
    ax.set_ylabel("requests per second (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
