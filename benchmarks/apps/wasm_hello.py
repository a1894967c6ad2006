"""WSGI app for gunicorn: run a WASI CGI module per request with wasmtime-py, competently.

What a user who knows wasmtime-py would write (no prefork-wasm code):

- gunicorn runs with `--preload`: the master imports this file, so the module is compiled once
  (in the master, before the fork; the master never runs a guest, which would leave runtime
  threads a forked worker lacks) and the workers share its code.
- Per worker, on its first request: a Linker with WASI and an `InstancePre` (imports resolved
  once), and a memfd per thread that the guest's stdout is written to through
  `/proc/self/fd/N` (wasmtime opens the path with truncation, so it is reused for every request;
  no temporary file is created per request).
- Per request: a WasiConfig with the CGI environment (the same variables prefork-wasm gives),
  stdin from a second memfd when there is a body, a Store, `InstancePre.instantiate`, `_start`
  (through the public `Instance.exports`), `Store.close`, then stdout is read back and parsed as
  a CGI response; the response carries Content-Length.

It runs under gunicorn's sync workers and under gthread workers (keep-alive): the per-worker
state is per thread where a thread's request needs its own (the stdout/stdin memfds).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

import wasmtime

WASM = os.environ.get(
    "BENCH_WASM", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "wasm", "hello.wasm")
)
ARGV0 = os.path.basename(WASM)
SERVER_SOFTWARE = "gunicorn"

engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, WASM)  # with --preload: compiled once, in the master

StartResponse = Callable[[str, list[tuple[str, str]]], object]


class _Worker:
    """What a worker process makes once: the pre-linked module."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self.pre = linker.instantiate_pre(module)


class _Files(threading.local):
    """One stdout memfd (and one stdin memfd) per thread, reused for every request."""

    def __init__(self) -> None:
        self.out = os.memfd_create("wasm-stdout", os.MFD_CLOEXEC)
        self.out_path = f"/proc/self/fd/{self.out}"
        self.inp = os.memfd_create("wasm-stdin", os.MFD_CLOEXEC)
        self.in_path = f"/proc/self/fd/{self.inp}"


_worker: _Worker | None = None
_lock = threading.Lock()
_files: _Files | None = None


def _state() -> tuple[_Worker, _Files]:
    global _worker, _files
    w = _worker
    if w is None or w.pid != os.getpid():  # first request in this worker process
        with _lock:
            if _worker is None or _worker.pid != os.getpid():
                _worker, _files = _Worker(), _Files()
            w = _worker
    assert _files is not None
    return w, _files


def cgi_environment(environ: dict) -> dict[str, str]:
    """RFC 3875 meta-variables from the WSGI environ: the set prefork-wasm gives its guests."""
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_NAME": environ.get("SERVER_NAME", "localhost"),
        "SERVER_PORT": str(environ.get("SERVER_PORT", "")),
        "REQUEST_METHOD": environ["REQUEST_METHOD"],
        "REQUEST_SCHEME": environ.get("wsgi.url_scheme", "http"),
        "REQUEST_URI": environ.get("RAW_URI") or path + ("?" + query if query else ""),
        "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + path,
        "SCRIPT_FILENAME": WASM,
        "PATH_INFO": "",
        "QUERY_STRING": query,
        "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
        "REMOTE_PORT": str(environ.get("REMOTE_PORT", "")),
        "UNIQUE_ID": f"{os.getpid()}-{id(environ):x}",
    }
    if environ.get("CONTENT_LENGTH"):
        env["CONTENT_LENGTH"] = environ["CONTENT_LENGTH"]
    if environ.get("CONTENT_TYPE"):
        env["CONTENT_TYPE"] = environ["CONTENT_TYPE"]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            env[key] = value
    return env


def parse_cgi(output: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split a CGI response into status, headers and body."""
    sep = output.find(b"\r\n\r\n")
    head, body = (output[:sep], output[sep + 4:]) if sep >= 0 else output.split(b"\n\n", 1)
    status = "200 OK"
    headers = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = value.strip()
        else:
            headers.append((name.strip(), value.strip()))
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    worker, files = _state()
    wasi = wasmtime.WasiConfig()
    wasi.argv = [ARGV0]
    env = cgi_environment(environ)
    wasi.env = list(env.items())
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        body = environ["wsgi.input"].read(length)
        os.ftruncate(files.inp, 0)
        os.pwrite(files.inp, body, 0)
        wasi.stdin_file = files.in_path
    wasi.stdout_file = files.out_path
    wasi.inherit_stderr()
    store = wasmtime.Store(engine)
    try:
        store.set_wasi(wasi)
        instance = worker.pre.instantiate(store)
        start = instance.exports(store)["_start"]
        try:
            start(store)  # type: ignore[operator]
        except wasmtime.ExitTrap as e:  # WASI proc_exit, also for status 0
            if e.code != 0:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
                return [b"module exited with status %d\n" % e.code]
    finally:
        store.close()
    output = os.pread(files.out, os.fstat(files.out).st_size, 0)
    status, headers, out_body = parse_cgi(output)
    start_response(status, headers)
    return [out_body]
