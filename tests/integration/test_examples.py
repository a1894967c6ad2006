"""The component examples as conf/server.conf serves them, through the real server: the
componentize-py app (GET, POST with a JSON body on stdin, CGI status and headers, a guest-set
404, WasmEnv, a read-only mapped directory) and the componentize-js one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO, Server

DATA = REPO / "examples" / "data"


def shipped_location(prefix: str) -> str:
    """conf/server.conf's <Location prefix> block, its relative paths made absolute."""
    text = (REPO / "conf" / "server.conf").read_text()
    match = re.search(rf"^<Location {re.escape(prefix)}>$.*?^</Location>$", text, re.MULTILINE | re.DOTALL)
    assert match, f"conf/server.conf has no <Location {prefix}>"
    return match.group(0).replace(" examples/", f" {REPO}/examples/")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, component_cache: Path) -> Iterator[Server]:
    """One server for the module, on the suite's shared cache: each component compiles once."""
    body = f"WasmCacheDir {component_cache}\n{shipped_location('/app')}\n{shipped_location('/jsapp')}\n"
    server = Server(tmp_path_factory.mktemp("examples"), body)
    try:  # stopped also when it never came up: a failed start must not leave a master behind
        server.start()
        yield server
    finally:
        server.stop()


def json_of(response: tuple[int, dict[str, str], bytes, Any]) -> tuple[int, dict[str, str], Any]:
    status, headers, body, _ = response
    assert headers["content-type"] == "application/json", body
    return status, headers, json.loads(body)


def test_get_shows_method_path_query_and_the_wasmenv_value(server: Server) -> None:
    status, _, data = json_of(server.get("/app/?x=1&x=2&y=%C3%A9"))
    assert status == 200
    assert data["method"] == "GET" and data["path_info"] == "/"
    assert data["query"] == {"x": ["1", "2"], "y": ["é"]}
    assert data["greeting"] == "hello from WasmEnv"


def test_post_reads_the_json_body_from_stdin(server: Server) -> None:
    sent = {"name": "prefork-wasm", "list": [1, 2.5, None], "text": "é" * 5000}
    payload = json.dumps(sent).encode()
    status, _, data = json_of(server.request("POST", "/app/echo", body=payload,
                                             headers={"Content-Type": "application/json"}))
    assert status == 200
    assert data == {"received": sent, "bytes": len(payload), "content_type": "application/json"}


def test_the_guest_sets_status_and_headers(server: Server) -> None:
    status, _, data = json_of(server.request("POST", "/app/echo", body=b"{not json"))
    assert status == 400 and data["error"].startswith("the body is not JSON")
    status, headers, data = json_of(server.request("DELETE", "/app"))
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, data = json_of(server.get("/app/no/such/route"))
    assert status == 404 and data == {"error": "no such route", "path_info": "/no/such/route"}


def test_a_file_from_the_read_only_mapped_directory(server: Server) -> None:
    status, headers, body, _ = server.get("/app/files/greeting.txt")
    assert (status, headers["content-type"]) == (200, "text/plain")
    assert body == (DATA / "greeting.txt").read_bytes()
    status, _, data = json_of(server.get("/app/files/missing.txt"))
    assert status == 404 and "cannot read /data/missing.txt" in data["error"]


def test_the_mapped_directory_cannot_be_written(server: Server) -> None:
    status, _, data = json_of(server.request("PUT", "/app/files/new.txt", body=b"data"))
    assert status == 403 and data["error"].startswith("cannot write /data/new.txt")
    assert not (DATA / "new.txt").exists()


def test_the_javascript_example(server: Server) -> None:
    status, _, data = json_of(server.get("/jsapp?a=1"))
    assert status == 200 and data == {"method": "GET", "path_info": "", "query": "a=1",
                                      "greeting": "hello from WasmEnv"}
    status, _, data = json_of(server.request("POST", "/jsapp/echo", body=b'{"a": [1, "b"]}'))
    assert status == 200 and data == {"received": {"a": [1, "b"]}, "bytes": 15}
    status, _, data = json_of(server.get("/jsapp/elsewhere"))
    assert status == 404 and data["path_info"] == "/elsewhere"
