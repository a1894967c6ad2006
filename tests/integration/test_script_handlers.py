"""A directory of Python scripts run by one interpreter module (CPython for WASI, fetched by
scripts/fetch-python-wasm) through AddHandler, the way mod_wasm runs PHP sites: each request
runs the script it names, with mod_cgi's variables; a missing script is 404 without a run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import EXAMPLES, REPO, Server, env_of, wait_for

PYTHON_WASM = REPO / "build" / "python-wasm" / "python.wasm"

SCRIPT = """import os, sys
sys.stdout.write("Content-Type: text/plain\\r\\n\\r\\n")
sys.stdout.write("SCRIPT={name}\\n")
for key in ("SCRIPT_NAME", "SCRIPT_FILENAME", "PATH_INFO", "PATH_TRANSLATED", "DOCUMENT_ROOT", "REQUEST_URI"):
    sys.stdout.write(key + "=" + os.environ.get(key, "-") + "\\n")
sys.stdout.write("ARGV=" + " ".join(sys.argv) + "\\n")
sys.stdout.write("WHERE=" + os.environ.get("WHERE", "-") + "\\n")
sys.stdout.write("OPTIMIZE=" + str(sys.flags.optimize) + "\\n")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    www = tmp_path_factory.mktemp("scripts") / "www"
    for name in ("a.py", "b.py", "index.py", "sub/c.py", "run-me", "private/p.py", "opt/o.py", "hello/h.py"):
        (www / name).parent.mkdir(parents=True, exist_ok=True)
        (www / name).write_text(SCRIPT.format(name=name))
    (www / "notes.txt").write_text("plain text")
    return www


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    fetched = subprocess.run([str(REPO / "scripts" / "fetch-python-wasm")], capture_output=True, text=True, timeout=600)
    assert fetched.returncode == 0, fetched.stderr
    body = f"""
DocumentRoot {site}
DirectoryIndex index.html index.py
AddHandler wasm-handler .py
WasmModule {PYTHON_WASM}
WasmEnableCGI On
WasmMapDir /site {site}
WasmMapCGIFileNames On
WasmTimeout 20
<Files "run-me">
    SetHandler wasm-handler
</Files>
<Directory {site}/private>
    Require all denied
</Directory>
<Directory {site}/opt>
    WasmArg -O
    WasmEnv WHERE opt
</Directory>
<Directory {site}/hello>
    WasmModule {EXAMPLES / "hello.wasm"}
</Directory>
"""
    server = Server(tmp_path_factory.mktemp("scripts-server"), body, start_servers=1).start()
    yield server
    server.stop()


def run(server: Server, target: str) -> dict[str, str]:
    status, _, body, _ = server.get(target)
    assert status == 200, body
    return env_of(body)


def test_each_request_runs_the_script_it_names(server: Server, site: Path) -> None:
    for name in ("a.py", "b.py", "sub/c.py"):
        env = run(server, f"/{name}")
        assert env["SCRIPT"] == name
        assert env["SCRIPT_NAME"] == f"/{name}"
        assert env["SCRIPT_FILENAME"] == f"/site/{name}"  # WasmMapCGIFileNames: the guest's path
        assert env["ARGV"] == f"/site/{name}"  # the script is the interpreter's argument
        assert env["DOCUMENT_ROOT"] == str(site)


def test_a_directory_changes_how_its_scripts_run(server: Server) -> None:
    env = run(server, "/opt/o.py")
    assert (env["SCRIPT"], env["ARGV"], env["WHERE"], env["OPTIMIZE"]) == ("opt/o.py", "/site/opt/o.py", "opt", "1")
    assert (run(server, "/a.py")["WHERE"], run(server, "/a.py")["OPTIMIZE"]) == ("-", "0")
    status, _, body, _ = server.get("/hello/h.py")  # another module for this directory
    assert (status, body) == (200, b"Hello from WebAssembly!\n")


def test_path_info_and_path_translated_as_mod_cgi_sets_them(server: Server, site: Path) -> None:
    env = run(server, "/sub/c.py/more/of%20it?q=1")
    assert (env["SCRIPT"], env["PATH_INFO"], env["PATH_TRANSLATED"]) == (
        "sub/c.py",
        "/more/of it",
        f"{site}/more/of it",
    )
    assert env["REQUEST_URI"] == "/sub/c.py/more/of%20it?q=1"


def test_directory_index_runs_the_index_script(server: Server) -> None:
    env = run(server, "/")
    assert (env["SCRIPT"], env["SCRIPT_NAME"], env["PATH_INFO"], env["REQUEST_URI"]) == (
        "index.py",
        "/index.py",
        "",
        "/",
    )


def test_set_handler_in_files_runs_a_name_without_extension(server: Server) -> None:
    assert run(server, "/run-me")["SCRIPT"] == "run-me"


def test_a_missing_script_is_404_without_running_the_guest(server: Server) -> None:
    run(server, "/a.py")  # the worker has run a guest: a run would log like one
    status, _, _, _ = server.get("/missing.py")
    assert status == 404
    status, _, _, _ = server.get("/private/p.py")
    assert status == 403
    wait_for(lambda: '"GET /private/p.py HTTP/1.1" 403' in server.access_log.read_text(), what="both requests logged")
    log = server.log()
    assert "missing.py" not in log and "p.py" not in log  # no guest ran: nothing on its stderr, no failure


def test_other_files_beside_the_scripts_are_static(server: Server) -> None:
    status, headers, body, _ = server.get("/notes.txt")
    assert (status, headers["content-type"], body) == (200, "text/plain", b"plain text")
