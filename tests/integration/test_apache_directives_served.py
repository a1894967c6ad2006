"""A config using every Apache directive an Apache + mod_wasm site brings along (issue 20's list)
passes -t and behaves as Apache 2.4 documents it, through the real server: each test cites the
documented behaviour it checks."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Server, wait_for

CONFIG = r"""
ServerTokens Full
ServerSignature On
TraceEnable Off
FileETag INode MTime Size
Protocols h2 http/1.1
ExtendedStatus On
LogLevel warn wasm:debug
LogFormat "%{ms}T %{us}T %I %O %k %X %f %{DOCUMENT_ROOT}e %{%Y}t %R %{c}a %{remote}p %U" timing
CustomLog "|$exec cat >>logs/piped_log" timing env=!dontlog
DocumentRoot htdocs
<Directory htdocs>
    Require all granted
</Directory>
DirectoryIndex index.php
DirectoryIndex index.html
ErrorDocument 404 /errors/404.html
ErrorDocument 403 "Access to this is denied here"
ErrorDocument 500 http://status.test/down
Header always set X-Frame-Options DENY
Header set X-Content-Type-Options nosniff
Header append Cache-Control private
RequestHeader set X-From-Server yes
RequestHeader unset X-Remove-Me
Redirect /old /hello
RedirectMatch ^/img/(.*)\.gif$ http://images.test/$1.png
RedirectPermanent /perm http://perm.test/new
Redirect gone /gone
<Location /env>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/env.wasm
    WasmEnableCGI On
</Location>
<Location /hello>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/hello.wasm
    WasmEnableCGI On
</Location>
<Location /trap>
    SetHandler wasm-handler
    WasmModule ${MODULES}/trap.wasm
</Location>
<Location /denied>
    Require all denied
</Location>
<Location /moved>
    Redirect seeother http://moved.test/here
</Location>
<Location /spa>
    FallbackResource /spa/index.html
</Location>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("apache")
    htdocs = root / "htdocs"
    for folder in ("errors", "spa", "php"):
        (htdocs / folder).mkdir(parents=True)
    (htdocs / "errors" / "404.html").write_text("<h1>our own 404 page</h1>\n")
    (htdocs / "spa" / "index.html").write_text("single page app\n")
    (htdocs / "php" / "index.php").write_text("<?php echo 1;")
    (htdocs / "php" / "index.html").write_text("the second index\n")
    (htdocs / "file.txt").write_text("a file\n")
    srv = Server(root, CONFIG).start()
    yield srv
    srv.stop()


def test_the_config_passes_check(server: Server) -> None:
    result = subprocess.run(server.command("-t"), capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n"), result.stderr
    assert "Protocols h2: not spoken here" in result.stderr  # said, not refused


def test_server_tokens_full_and_the_signature(server: Server) -> None:
    """ServerTokens Full: 'Server: Apache/2.4.2 (Unix) PHP/4.2.2 MyMod/1.2' (the product, its
    version, the OS and more); ServerSignature On adds a footer line with the server version
    and the virtual host name to server-generated documents."""
    status, headers, body, _ = server.get("/gone")
    assert status == 410
    assert re.fullmatch(r"prefork-wasm/[\d.]+ \(Linux\) wasmtime/[\d.]+ Python/[\d.]+", headers["server"])
    assert re.search(rf"<address>prefork-wasm/[^<]* Server at 127\.0\.0\.1 Port {server.port}</address>", body.decode())


def test_header_onsuccess_and_always(server: Server) -> None:
    """mod_headers: 'always' applies to every response, the default (onsuccess) not to the
    error responses the server makes itself (Redirect included)."""
    status, headers, _, _ = server.get("/file.txt")
    assert status == 200
    assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff")
    assert headers["cache-control"] == "private"  # append onto no such header: set
    status, headers, _, _ = server.get("/old")
    assert status == 302 and headers["x-frame-options"] == "DENY" and "x-content-type-options" not in headers


def test_request_header_reaches_the_guest(server: Server) -> None:
    """RequestHeader: the request header is set (or removed) before the content handler runs."""
    status, _, body, _ = server.get("/env", headers={"X-Remove-Me": "1"})
    assert status == 200
    assert b"HTTP_X_FROM_SERVER=yes" in body and b"HTTP_X_REMOVE_ME" not in body


@pytest.mark.parametrize(
    "path, status, location, apache_says",
    [
        ("/old", 302, "http://127.0.0.1:{port}/hello", "Redirect: a URL-path target gets this server's name"),
        ("/old?x=1", 302, "http://127.0.0.1:{port}/hello?x=1", "the query string is carried over"),
        ("/img/a/b.gif", 302, "http://images.test/a/b.png", "RedirectMatch with $1"),
        ("/perm/x", 301, "http://perm.test/new/x", "RedirectPermanent: 301, the rest of the path appended"),
        ("/moved/deeper", 303, "http://moved.test/here", "Redirect in a <Location>: the Location is redirected"),
    ],
)
def test_redirects(server: Server, path: str, status: int, location: str, apache_says: str) -> None:
    got, headers, _, _ = server.get(path)
    assert (got, headers["location"]) == (status, location.format(port=server.port)), apache_says


def test_redirect_gone_is_410(server: Server) -> None:
    assert server.get("/gone/anything")[0] == 410


@pytest.mark.parametrize(
    "path, status, body, apache_says",
    [
        ("/nosuch", 404, b"<h1>our own 404 page</h1>\n", "a local URL-path: its content, with the error's status"),
        ("/denied", 403, b"Access to this is denied here", "a message instead of the server's page"),
    ],
)
def test_error_document(server: Server, path: str, status: int, body: bytes, apache_says: str) -> None:
    got, _, received, _ = server.get(path)
    assert (got, received) == (status, body), apache_says


def test_error_document_remote_url_redirects(server: Server) -> None:
    """ErrorDocument with an external URL: the client is redirected to it (a 302)."""
    got, headers, _, _ = server.get("/trap")
    assert (got, headers["location"]) == (302, "http://status.test/down")


def test_fallback_resource(server: Server) -> None:
    """FallbackResource: a URL that maps to nothing on disk is answered by the local URL."""
    status, _, body, _ = server.get("/spa/some/deep/link")
    assert (status, body) == (200, b"single page app\n")
    assert server.get("/file-outside-spa")[0] == 404  # no FallbackResource there


def test_directory_index_adds(server: Server) -> None:
    """Two DirectoryIndex lines at server level make one list: index.php is looked for first."""
    status, _, body, _ = server.get("/php/")
    assert (status, body) == (200, b"<?php echo 1;")


def test_trace_enable_off_is_405(server: Server) -> None:
    """TraceEnable Off: the core server returns a 405 (Method not allowed) error to the client."""
    assert server.raw("/", method="TRACE")[0] == 405


def test_file_etag_parts(server: Server) -> None:
    """FileETag INode MTime Size: the ETag has the three, in hex."""
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', server.get("/file.txt")[1]["etag"])


def test_piped_custom_log_with_the_newer_format_strings(server: Server) -> None:
    """CustomLog "|program": the lines go to the program's stdin; env=!dontlog logs requests
    without that variable; %{ms}T %{us}T %I %O %k %X %f %{VAR}e %{format}t %R %{c}a %{remote}p."""
    server.get("/env")
    piped = server.root / "logs" / "piped_log"
    lines = wait_for(
        lambda: [line for line in piped.read_text().splitlines() if line.endswith(" /env")] if piped.exists() else [],
        what="the piped log line",
    )
    ms, us, bytes_in, bytes_out, keepalives, status, filename, docroot, year, handler, peer, port, path = (
        lines[-1].split(" ")
    )
    assert int(us) >= int(ms) >= 0 and int(bytes_in) > 0 and int(bytes_out) > 100
    # %X: '+', http.client's request did not ask to close
    assert (keepalives, status, handler, peer, path) == ("0", "+", "wasm-handler", "127.0.0.1", "/env")
    assert filename.endswith("env.wasm") and docroot == "-" and re.fullmatch(r"\d{4}", year) and int(port) > 0


def test_trace_enable_on_echoes_the_request(make_server: Callable[..., Server]) -> None:
    """TraceEnable On (the default): TRACE is answered with the request as received
    (message/http); a body is refused unless TraceEnable extended."""
    server = make_server("")
    status, body = server.raw("/x", method="TRACE", host="tracing")
    assert status == 200 and body.startswith(b"TRACE /x HTTP/1.1\r\nhost: tracing\r\n")


def test_syslog_error_log_passes_check(make_server: Callable[..., Server], tmp_path: Path) -> None:
    server = make_server("ErrorLog syslog:local1\n", start=False)
    result = subprocess.run(server.command("-t"), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert not (server.root / "syslog:local1").exists()
