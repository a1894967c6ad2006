"""The systems under test: their configs (from benchmarks/conf/*.in) and how to start them.

All of them bind 127.0.0.1 only, run the same number of worker processes, and all write an
access log in the combined format to the run's temp folder (Apache logs too, so everyone does).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

import psutil

from harness import Process, free_port, http_get

from . import procs

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "benchmarks" / "conf"
APPS = ROOT / "benchmarks" / "apps"
BENCH_VENV = ROOT / "build" / "bench-venv"
HELLO_WASM = ROOT / "examples" / "wasm" / "hello.wasm"
HELLO_C = ROOT / "examples" / "src" / "hello.c"
STATIC_BODY = b"Hello, world\n"  # 13 bytes


@dataclass
class System:
    key: str  # short id used in JSON and on the command line
    label: str  # name in the table and the plot
    path: str  # what wrk requests
    expect: bytes  # part of the body a correct answer contains
    port: int = 0
    proc: Process | None = None
    start_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def worker_pids(self) -> list[int]:
        """The server's descendants but prefork-wasm's keepers (each sleeps beside its worker
        until that dies: not a worker, and about 2 MiB of its own)."""
        if not self.proc:
            return []
        return [p.pid for p in self.proc.children(recursive=True) if not _keeper(p)]


def _keeper(process: psutil.Process) -> bool:
    try:
        return "keeper of worker" in " ".join(process.cmdline())
    except psutil.Error:
        return False


SYSTEMS = {
    "prefork-wasm": ("prefork-wasm (hello.wasm, CGI)", "/hello", b"Hello from WebAssembly!"),
    "apache-static": ("Apache prefork, static 13 B file", "/hello.txt", STATIC_BODY),
    "apache-cgi": ("Apache prefork + mod_cgi (native hello)", "/hello", b"Hello from WebAssembly!"),
    "apache-cgid": ("Apache prefork + mod_cgid (native hello)", "/hello", b"Hello from WebAssembly!"),
    "gunicorn-wasm": ("gunicorn sync + wasmtime-py (hello.wasm)", "/hello", b"Hello from WebAssembly!"),
    "gunicorn-wasm-gthread": ("gunicorn gthread + wasmtime-py (hello.wasm, keep-alive)", "/hello",
                              b"Hello from WebAssembly!"),
    "gunicorn-py": ("gunicorn sync, plain Python hello", "/hello", b"Hello from Python!"),
}


GUNICORN = ("gunicorn-wasm", "gunicorn-wasm-gthread", "gunicorn-py")
# Threads per gthread worker, the best of 1, 2, 4, 8 and 16 measured at -c16 keep-alive on
# this 2-core machine (4: ~15 % above 2 and 1; 8 about the same as 4; 16 lower).
GTHREAD_THREADS = 4


def fill(template: str, out: Path, **values: object) -> Path:
    text = Template((CONF / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    out.write_text(text)
    return out


def prepare_dir(run_dir: Path) -> None:
    """Files Apache serves: the static file and the native CGI build of hello.c."""
    # Apache's workers run as www-data: they must reach the docroot and the CGI program.
    run_dir.chmod(0o755)
    (run_dir / "htdocs").mkdir(exist_ok=True)
    (run_dir / "htdocs" / "hello.txt").write_bytes(STATIC_BODY)
    cgi_bin = run_dir / "cgi-bin"
    cgi_bin.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", str(cgi_bin / "hello"), str(HELLO_C)], check=True, timeout=60)


def start(system: System, run_dir: Path, workers: int, max_keepalive: int) -> None:
    system.port = free_port()
    name = system.key
    common = dict(dir=run_dir, port=system.port, name=name, workers=workers, max_keepalive=max_keepalive)
    log = run_dir / f"{name}.out"
    if name in ("apache-static", "apache-cgi", "apache-cgid"):
        conf = fill(f"{name}.conf.in", run_dir / f"{name}.conf", **common)
        argv = [shutil.which("apache2") or "/usr/sbin/apache2", "-f", str(conf), "-DFOREGROUND"]
        system.proc = procs.start(name, argv, log)
    elif name == "prefork-wasm":
        conf = fill("prefork-wasm.conf.in", run_dir / f"{name}.conf", root=ROOT, **common)
        system.proc = procs.start_prefork_wasm(name, conf, log)
    elif name in GUNICORN:
        app = "py_hello:app" if name == "gunicorn-py" else "wasm_hello:app"
        if name == "gunicorn-wasm-gthread":  # keep-alive: an idle connection holds no thread
            worker_class = ["--worker-class", "gthread", "--threads", str(GTHREAD_THREADS)]
        else:
            worker_class = ["--worker-class", "sync"]
        argv = [
            str(BENCH_VENV / "bin" / "gunicorn"), *worker_class, "--workers", str(workers),
            "--bind", f"127.0.0.1:{system.port}", "--chdir", str(APPS),
            "--preload",  # the master imports the app: hello.wasm is compiled once, before the fork
            "--keep-alive", "5",  # ignored by sync workers: they close after every response
            "--access-logfile", str(run_dir / f"{name}.access.log"),  # default format = combined
            "--error-logfile", str(run_dir / f"{name}.error.log"),
            "--pid", str(run_dir / f"{name}.pid"), app,
        ]
        system.proc = procs.start(name, argv, log, env={"BENCH_WASM": str(HELLO_WASM)})
    else:
        raise ValueError(name)
    system.start_seconds = procs.wait_http(system.proc, system.port, system.path, timeout=120)
    status, body = http_get(system.port, system.path)
    if status != 200 or system.expect not in body:
        raise RuntimeError(f"{name}: unexpected answer {status} {body[:200]!r}")


def make(keys: list[str]) -> list[System]:
    return [System(key, *SYSTEMS[key]) for key in keys]


def versions() -> dict[str, str]:
    """Versions of the programs compared (best effort: a missing one reads 'unknown')."""

    def out(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    apache = out(["apache2", "-v"]).splitlines()
    wrk = out(["wrk", "--version"]).splitlines()
    return {
        "prefork-wasm source": out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "apache": apache[0].split(":", 1)[-1].strip() if apache else "unknown",
        "wrk": wrk[0] if wrk else "unknown",
        "prefork-wasm": out([str(ROOT / ".venv" / "bin" / "prefork-wasm"), "-v"]).replace("\n", "; "),
        "gunicorn": out([str(BENCH_VENV / "bin" / "gunicorn"), "--version"]),
        "wasmtime-py (gunicorn venv)": out([str(BENCH_VENV / "bin" / "python"), "-c",
                                            "import importlib.metadata as m; print(m.version('wasmtime'))"]),
        "gcc": out(["gcc", "-dumpfullversion"]),
    }

