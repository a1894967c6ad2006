"""`--tls`: HTTPS, prefork-wasm beside Apache prefork + mod_ssl, in one run.

Both servers run 4 worker processes (`--workers`) and listen three times on 127.0.0.1: plain HTTP,
HTTPS with an ECDSA P-256 certificate and HTTPS with an RSA 2048 one. The certificates are made
for the run with `openssl req` and both servers load the same files. In interleaved rounds (wrk
-c16), for each server:

- new connections per second with `Connection: close` on the 13-byte static file (the same file
  on both, so the figure is the cost of TCP + TLS + one HTTP exchange): a full handshake per
  connection on each key type, resumed handshakes (ECDSA), and plain HTTP;
- keep-alive req/s over HTTPS (ECDSA) and over plain HTTP on the same server: prefork-wasm's
  hello.wasm, Apache's static file (context).

Targets: new TLS connections per second >= 0.7x Apache's for each key type, and prefork-wasm's
HTTPS keep-alive req/s >= 0.7x its plain HTTP keep-alive, each the median over rounds of the
ratio within a round.

Every HTTPS run preloads benchmarks/wrk/tls_shim.c into wrk: without it wrk spins while a
handshake waits for the server, and resumes the last session on every new connection.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import HOST, Process, free_port

from . import procs, wrk
from .peers import HELLO_WASM, ROOT, STATIC_BODY, fill

SHIM = ROOT / "benchmarks" / "wrk" / "tls_shim.c"
STATIC = "/hello.txt"
TARGET_CONNECTIONS = 0.7  # prefork-wasm's new TLS connections per second over Apache's, each key type
TARGET_KEEP_ALIVE = 0.7  # prefork-wasm's HTTPS keep-alive req/s over its plain HTTP keep-alive
# openssl req's key options per key type, and the name shown.
KEY_TYPES = {
    "ecdsa": ("ECDSA P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    "rsa": ("RSA 2048", ["-newkey", "rsa:2048"]),
}
SERVERS = {
    "prefork-wasm": "prefork-wasm",
    "apache": "Apache prefork + mod_ssl",
}
# What the keep-alive comparison requests: prefork-wasm's own work, Apache's static file.
APP = {"prefork-wasm": ("/hello", b"Hello from WebAssembly!"), "apache": (STATIC, STATIC_BODY)}


@dataclass(frozen=True)
class Case:
    name: str
    listener: str  # "http" or a key type
    close: bool  # `Connection: close`: a new connection per request
    full_handshake: bool = False  # the shim drops wrk's last session before each handshake
    app: bool = False  # APP's path, else the static file


CASES = (
    Case("new TLS connection, ECDSA P-256", "ecdsa", close=True, full_handshake=True),
    Case("new TLS connection, RSA 2048", "rsa", close=True, full_handshake=True),
    Case("resumed TLS connection, ECDSA P-256", "ecdsa", close=True),
    Case("new plain HTTP connection", "http", close=True),
    Case("HTTPS keep-alive (ECDSA)", "ecdsa", close=False, app=True),
    Case("HTTP keep-alive", "http", close=False, app=True),
)
NEW = {key: f"new TLS connection, {label}" for key, (label, _) in KEY_TYPES.items()}
RESUMED, PLAIN_NEW = "resumed TLS connection, ECDSA P-256", "new plain HTTP connection"
HTTPS_KA, HTTP_KA = "HTTPS keep-alive (ECDSA)", "HTTP keep-alive"


@dataclass
class Server:
    key: str
    proc: Process
    ports: dict[str, int]  # "http" and one per key type

    def url(self, case: Case) -> str:
        scheme = "http" if case.listener == "http" else "https"
        path = APP[self.key][0] if case.app else STATIC
        return f"{scheme}://{HOST}:{self.ports[case.listener]}{path}"

    def pids(self) -> list[int]:
        return [self.proc.pid, *(c.pid for c in self.proc.children())]


def make_certificates(folder: Path) -> dict[str, Path]:
    """A self-signed server certificate per key type for localhost and 127.0.0.1: folder/KEY.pem
    and folder/KEY.key (0600, read by each master before it forks)."""
    folder.mkdir(exist_ok=True)
    certs = {}
    for key, (_, options) in KEY_TYPES.items():
        subprocess.run(["openssl", "req", "-x509", *options, "-nodes", "-days", "365", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-addext", "basicConstraints=critical,CA:FALSE",
                        "-addext", "keyUsage=critical,digitalSignature",
                        "-addext", "extendedKeyUsage=serverAuth",
                        "-keyout", str(folder / f"{key}.key"), "-out", str(folder / f"{key}.pem")],
                       check=True, capture_output=True, timeout=60)
        (folder / f"{key}.key").chmod(0o600)
        certs[key] = folder / f"{key}.pem"
    return certs


def build_shim(run_dir: Path) -> Path:
    out = run_dir / "tls_shim.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM)], check=True, timeout=60)
    return out


def start(run_dir: Path, workers: int, max_keepalive: int) -> list[Server]:
    """Both servers on fresh ports, each answering its plain port."""
    (run_dir / "htdocs").mkdir(exist_ok=True)
    (run_dir / "htdocs" / "hello.txt").write_bytes(STATIC_BODY)
    servers = []
    for key in SERVERS:
        ports = {"http": free_port(), **{k: free_port() for k in KEY_TYPES}}
        name = f"{key}-tls"
        values = dict(dir=run_dir, name=name, workers=workers, max_keepalive=max_keepalive, port=ports["http"],
                      ecdsa_port=ports["ecdsa"], rsa_port=ports["rsa"])
        if key == "apache":
            conf = fill("apache-tls.conf.in", run_dir / f"{name}.conf", **values)
            proc = procs.start(name, [shutil.which("apache2") or "/usr/sbin/apache2", "-f", str(conf),
                                      "-DFOREGROUND"], run_dir / f"{name}.out")
        else:
            conf = fill("prefork-wasm-tls.conf.in", run_dir / f"{name}.conf", root=ROOT, **values)
            proc = procs.start_prefork_wasm(name, conf, run_dir / f"{name}.out")
        procs.wait_http(proc, ports["http"], STATIC, timeout=180)
        servers.append(Server(key, proc, ports))
    return servers


def probe(server: Server, certs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Each TLS listener presents our certificate of its key type and answers the static file
    and the keep-alive path; what it negotiated with Python's ssl (the same OpenSSL as wrk)."""
    seen = {}
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # self-signed: the certificate is compared below instead
    for key, pem in certs.items():
        want = ssl.PEM_cert_to_DER_cert(pem.read_text())
        for path, expect in ((STATIC, STATIC_BODY), APP[server.key]):
            conn = http.client.HTTPSConnection(HOST, server.ports[key], timeout=10, context=client)
            try:
                conn.connect()
                assert isinstance(conn.sock, ssl.SSLSocket)
                got, version, cipher = conn.sock.getpeercert(binary_form=True), conn.sock.version(), conn.sock.cipher()
                conn.request("GET", path, headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
            if got != want:
                raise RuntimeError(f"{server.key}: port {server.ports[key]} does not present {pem.name}")
            if response.status != 200 or expect not in body:
                raise RuntimeError(f"{server.key}: https {path} answered {response.status} {body[:200]!r}")
        seen[key] = {"protocol": str(version), "cipher": cipher[0] if cipher else "?"}
    return seen


def versions() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    return {
        "openssl (wrk, Apache)": out(["openssl", "version"]),
        "prefork-wasm's Python ssl": out([str(procs.SERVER_PYTHON), "-c", "import ssl; print(ssl.OPENSSL_VERSION)"]),
    }


def run(run_dir: Path, rounds: int, seconds: float, workers: int, connections: int, max_keepalive: int,
        retry_above: float, retries: int, warm: float = 2.0) -> dict[str, Any]:
    tls_dir = run_dir / "tls"
    certs = make_certificates(tls_dir)
    shim = str(build_shim(run_dir))
    servers = start(run_dir, workers, max_keepalive)
    negotiated = {s.key: probe(s, certs) for s in servers}

    def measure(server: Server, case: Case, duration: float, again: int) -> dict[str, Any]:
        every = [p for s in servers for p in s.pids()]
        env = None if case.listener == "http" else {"LD_PRELOAD": shim,
                                                    "WRK_FULL_HANDSHAKE": "1" if case.full_handshake else "0"}
        return wrk.least_disturbed(server.url(case), connections, duration, case.close, every, retry_above, again,
                                   env=env, server_pids=server.pids())

    for case in CASES:  # warm-up: every worker has served every kind of request
        for server in servers:
            measure(server, case, warm, 0)
    runs: list[dict[str, Any]] = []
    for index in range(rounds):
        for case in CASES:
            for server in (servers if index % 2 == 0 else servers[::-1]):
                r = measure(server, case, seconds, retries)
                r.update(round=index + 1, case=case.name, server=server.key)
                runs.append(r)
                print(f"bench: tls round {index + 1}/{rounds} {case.name:36} {server.key:13} {r['rps']:8,.0f} req/s "
                      f"p50 {r['p50_ms']:6.2f} ms CPU {r['cpu_ms_per_request']:.3f} ms/req errors {r['errors']} "
                      f"other-CPU {r['foreign_cpu']:.0%}", flush=True)
    log_lines = {s.key: _count_lines(run_dir / f"{s.key}-tls.access.log") for s in servers}
    found = versions()
    for s in servers:
        s.proc.stop()
    res = {"runs": runs, "negotiated": negotiated, "access_log_lines": log_lines, "versions": found,
           "workers": workers, "connections": connections, "seconds": seconds, "rounds": rounds,
           "max_keepalive": max_keepalive, "wasm": HELLO_WASM.name}
    res["summary"] = summarize(runs)
    res["targets"] = targets(runs)
    return res


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per case and server over the rounds."""
    rows = []
    for case in CASES:
        for key in SERVERS:
            mine = [r for r in runs if r["case"] == case.name and r["server"] == key]
            if not mine:
                continue
            rps = [r["rps"] for r in mine]
            median = statistics.median(rps)
            rows.append({
                "case": case.name, "server": key, "rps": median,
                "spread": (max(rps) - min(rps)) / median if median else 0.0,
                "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in mine),
                "errors": sum(int(r["errors"]) for r in mine),
                "stalled": max(int(r["stalled"]) for r in mine),
                "foreign_cpu": statistics.median(r["foreign_cpu"] for r in mine),
                "rounds": len(mine),
            })
    return rows


def paired(runs: list[dict[str, Any]], a: tuple[str, str], b: tuple[str, str]) -> float | None:
    """Median over rounds of (case, server) a's req/s over b's in the same round."""
    def by_round(which: tuple[str, str]) -> dict[int, float]:
        return {r["round"]: r["rps"] for r in runs if (r["case"], r["server"]) == which}

    mine, theirs = by_round(a), by_round(b)
    ratios = [mine[n] / theirs[n] for n in mine if theirs.get(n)]
    return statistics.median(ratios) if ratios else None


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two goals (PASS/MISS) and the context figures beside them (verdict 'info')."""
    checks = []

    def add(name: str, value: float | None, goal: float | None) -> None:
        verdict = "info" if goal is None else "n/a" if value is None else "PASS" if value >= goal else "MISS"
        checks.append({"target": name, "value": value, "goal": goal, "kind": ">=", "verdict": verdict})

    for key, (label, _) in KEY_TYPES.items():
        add(f"new TLS connections/s, {label}: prefork-wasm / Apache + mod_ssl",
            paired(runs, (NEW[key], "prefork-wasm"), (NEW[key], "apache")), TARGET_CONNECTIONS)
    add("HTTPS / HTTP keep-alive req/s, prefork-wasm (hello.wasm)",
        paired(runs, (HTTPS_KA, "prefork-wasm"), (HTTP_KA, "prefork-wasm")), TARGET_KEEP_ALIVE)
    add("HTTPS / HTTP keep-alive req/s, Apache (static file)",
        paired(runs, (HTTPS_KA, "apache"), (HTTP_KA, "apache")), None)
    add("resumed TLS connections/s: prefork-wasm / Apache",
        paired(runs, (RESUMED, "prefork-wasm"), (RESUMED, "apache")), None)
    add("new plain HTTP connections/s: prefork-wasm / Apache",
        paired(runs, (PLAIN_NEW, "prefork-wasm"), (PLAIN_NEW, "apache")), None)
    return checks


def targets_text(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        shown = "n/a" if c["value"] is None else f"{c['value']:.2f}"
        goal = "" if c["goal"] is None else f" (goal >= {c['goal']:g})"
        lines.append(f"{c['verdict']:4}  {c['target']}: {shown}{goal}")
    return "\n".join(lines)


def markdown(res: dict[str, Any]) -> str:
    handshake = {s: _cpu(res, NEW["ecdsa"], s) - _cpu(res, PLAIN_NEW, s) for s in SERVERS}
    lines = [
        (f"{res['workers']} worker processes each, wrk -t2 -c{res['connections']} -d{res['seconds']:g}s, "
         f"{res['rounds']} interleaved rounds (medians), MaxKeepAliveRequests {res['max_keepalive']} "
         "(0 = unlimited); both servers load the same certificate and key files, made for the run "
         "(self-signed, CN=localhost), and both write a combined-format access log. New connections: "
         "the 13-byte static file with `Connection: close`, a full handshake per connection unless the "
         f"case says resumed. Keep-alive: prefork-wasm runs {res['wasm']} at /hello, Apache serves the "
         "static file. Over HTTPS wrk runs with `benchmarks/wrk/tls_shim.c` preloaded (no spinning while "
         "a handshake waits; full handshakes when asked). CPU per request = the server's own processes' "
         "CPU time divided by its requests."),
        "",
        "| case | server | req/s | spread | p50 ms | p99 ms | server CPU per request | errors | stalled | other load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in res["summary"]:
        lines.append(f"| {row['case']} | {SERVERS[row['server']]} | {row['rps']:,.0f} | {row['spread']:.0%} "
                     f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_ms_per_request']:.3f} ms "
                     f"| {row['errors']} | {row['stalled']} | {row['foreign_cpu']:.0%} |")
    negotiated = "; ".join(f"{SERVERS[s]} {k}: {v['protocol']} {v['cipher']}"
                           for s, per in res["negotiated"].items() for k, v in per.items())
    lines += [
        "",
        "Ratios are paired: the median over rounds of one figure over the other in the same round "
        "(info = context, no goal).",
        "",
        "```",
        targets_text(res["targets"]),
        "```",
        "",
        "Server CPU of a full ECDSA handshake (new TLS connection minus new plain connection): "
        + ", ".join(f"{SERVERS[s]} {ms:.2f} ms" for s, ms in handshake.items())
        + f". Negotiated (Python's ssl client): {negotiated}. Versions: "
        + "; ".join(f"{k} {v}" for k, v in res["versions"].items())
        + ". Access log lines: " + ", ".join(f"{SERVERS[s]} {n:,}" for s, n in res["access_log_lines"].items()) + ".",
    ]
    return "\n".join(lines)


def _cpu(res: dict[str, Any], case: str, server: str) -> float:
    return next((r["cpu_ms_per_request"] for r in res["summary"] if (r["case"], r["server"]) == (case, server)), 0.0)
