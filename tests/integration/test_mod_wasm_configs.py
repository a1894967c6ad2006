"""mod_wasm's own example configs (tests/conf/mod_wasm, copied from its repository) run here
with only their paths and Listen changed; and -t, -S, -M as Apache's users know them."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import EXAMPLES, HELLO, REPO, Server

UPSTREAM = REPO / "tests" / "conf" / "mod_wasm"


def install(server: Server) -> Server:
    """mod_wasm's Docker image layout under the server's root, with its paths and Listen changed
    and our hello.wasm standing in for each of its modules (they are not in its repository)."""
    root = server.root
    (root / "conf").mkdir()
    (root / "logs").mkdir()
    for name in ("httpd.conf", "cgi_demo.conf"):
        text = (UPSTREAM / name).read_text().replace("/usr/local/apache2", str(root))
        text = re.sub(r"^Listen 8080$", f"Listen 127.0.0.1:{server.port}", text, flags=re.MULTILINE)
        (root / "conf" / name).write_text(text)
    main = (root / "conf" / "httpd.conf").read_text()
    for module in re.findall(r"^\s*WasmModule\s+(\S+)", main, re.MULTILINE):
        Path(module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLES / "hello.wasm", module)
    for directory in re.findall(r"^\s*Wasm(?:Map)?Dir\s+(?:\S+\s+)?(\S+)$", main, re.MULTILINE):
        Path(directory).mkdir(parents=True, exist_ok=True)
    # What Apache's image has beside its httpd.conf: the types file and the "It works!" page.
    (root / "conf" / "mime.types").write_text("text/html html htm\ntext/css css\n")
    (root / "htdocs").mkdir(exist_ok=True)
    (root / "htdocs" / "index.html").write_text("<html><body><h1>It works!</h1></body></html>\n")
    server.conf = root / "conf" / "httpd.conf"
    return server


def traversable(path: Path) -> None:
    """As root, the config's 'User daemon' workers must reach the DocumentRoot under pytest's
    private (0700) temporary folders: let others traverse (not list) them."""
    if os.geteuid() == 0:
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server.command(*args), capture_output=True, text=True, timeout=120, cwd=server.root, check=False
    )


def test_mod_wasm_example_config_passes_check(make_server: Callable[..., Server]) -> None:
    server = install(make_server("", start=False))
    result = cli(server, "-t")
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n"), result.stderr
    warnings = result.stderr
    conf = server.root / "conf"
    # Read through its IncludeOptional, inside <IfModule wasm_module>:
    assert f"{conf}/cgi_demo.conf:7: prefork-wasm has no equivalent of cgid_module" in warnings
    assert "has no equivalent of rewrite_module; its directives will be refused" in warnings
    assert "has no equivalent of wasm_module" not in warnings
    assert f"{conf}/cgi_demo.conf:49: AddHandler cgi-script: prefork-wasm has no such handler" in warnings
    assert "AddHandler wasm-handler:" not in warnings  # the PHP demos' script handlers are real
    # Besides warnings, -t accounts for memory: mod_wasm's config bounds no guest's memory.
    memory = [line for line in warnings.splitlines() if line.startswith("prefork-wasm: memory: ")]
    assert len(memory) == 2 and "no WasmMemoryLimit: wasm32's 4 GiB" in memory[0]
    assert "exceeds this machine's memory" in warnings
    assert all(line.startswith("prefork-wasm: warning: ") for line in warnings.splitlines() if line not in memory)


def test_mod_wasm_example_config_shows_its_routes(make_server: Callable[..., Server]) -> None:
    server = install(make_server("", start=False))
    result = cli(server, "-S")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "VirtualHost configuration:",
        f"127.0.0.1:{server.port:<12} main server localhost:80 ({server.conf}:58)",
    ]
    assert f'ServerRoot: "{server.root}"' in lines
    hello = server.root / "wasm_modules" / "rust-wasm" / "hello_wasm.wasm"
    assert any(re.fullmatch(rf"/hello-wasm +wasm-handler {hello} \({server.conf}:\d+\)", line) for line in lines)
    php = server.root / "wasm_modules" / "php-wasm" / "php-cgi-8.2.0.wasm"
    served = rf"/php-hello +files from {server.root}/htdocs, scripts run by {php} \({server.conf}:\d+\)"
    assert any(re.fullmatch(served, line) for line in lines)


def test_mod_wasm_example_config_serves_its_hello_route(make_server: Callable[..., Server]) -> None:
    server = install(make_server("", start=False))
    traversable(server.root / "htdocs")
    server.start()
    status, _, body, _ = server.get("/hello-wasm")
    assert status == 200
    assert b"Hello from WebAssembly!" in body  # not CGI there: our CGI hello's header is in the body
    status, headers, body, _ = server.get("/")
    assert (status, headers["content-type"], body) == (
        200,
        "text/html",
        b"<html><body><h1>It works!</h1></body></html>\n",
    )
    assert server.get("/php-hello/index.php")[0] == 404  # no such script: no guest run
    (server.root / "htdocs" / "php-hello").mkdir()
    (server.root / "htdocs" / "php-hello" / "index.php").write_text("<?php echo 'hi';")
    status, _, body, _ = server.get("/php-hello/index.php")  # AddHandler wasm-handler .php
    assert (status, body) == (200, b"Hello from WebAssembly!\n")  # hello.wasm stands in for php-cgi
    # Its 'DirectoryIndex index.php' and later 'DirectoryIndex index.html', both at server level,
    # make one list (mod_dir: several DirectoryIndex in a context add to it): index.php is the
    # PHP demos' index, run by their module, not a listing of the directory.
    for demo in ("php-hello", "php-hello-slim", "wordpress", "drupal-9-zero", "drupal", "drupal-10-zero"):
        (server.root / "htdocs" / demo).mkdir(exist_ok=True)
        (server.root / "htdocs" / demo / "index.php").write_text("<?php echo 'hi';")
        (server.root / "htdocs" / demo / "index.html").write_text("not the index: index.php comes first")
        status, _, body, _ = server.get(f"/{demo}/")
        assert (status, body) == (200, b"Hello from WebAssembly!\n"), demo
    assert server.get("/.htaccess")[0] == 403
    assert "LoadModule wasm_module: built into prefork-wasm" not in server.log()  # info, and LogLevel warn


def test_check_lists_every_error_of_the_file(make_server: Callable[..., Server]) -> None:
    body = (
        "Timeout soon\nFrobnicate 1\n<Location /x>\n    WasmEnableCGI maybe\n</Location>\n"
        "KeepAlive sometimes\nLoadModule wasm_module\n"
    )
    server = make_server(body, start=False)
    first = server.conf.read_text().splitlines().index("Timeout soon") + 1
    result = cli(server, "-t")
    assert result.returncode == 1
    assert [line.split(": ", 2)[1] for line in result.stderr.splitlines()] == [
        f"{server.conf}:{first + n}" for n in (0, 1, 3, 5, 6)
    ]


def test_modules_are_listed_as_apache_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prefork_wasm.cli", "-M"], capture_output=True, text=True, timeout=60, check=False
    )
    lines = result.stdout.splitlines()
    assert (result.returncode, lines[0]) == (0, "Loaded Modules:")
    assert " mpm_prefork_module (static)" in lines
    assert " wasm_module (shared)" in lines


def test_load_module_of_a_provided_module_is_logged_at_info(make_server: Callable[..., Server]) -> None:
    server = make_server("LoadModule wasm_module modules/mod_wasm.so\n" + HELLO)  # LogLevel info
    assert server.get("/hello")[0] == 200
    assert re.search(
        r"\[core:info\] \[pid \d+\] \S+:\d+: LoadModule wasm_module: built into prefork-wasm", server.log()
    )


def test_a_location_of_another_handler_ignores_an_inherited_module(make_server: Callable[..., Server]) -> None:
    # The server-level WasmModule is compiled for no location (a warning says so); the status
    # location inherits it and must not look for its compiled form.
    server = make_server(
        "WasmModule ${EXAMPLES}/hello.wasm\n<Location /server-status>\n    SetHandler server-status\n</Location>\n"
    )
    assert server.get("/server-status?auto")[0] == 200
    assert "is not served anywhere" in server.log()
