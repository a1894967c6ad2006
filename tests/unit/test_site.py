"""The request's fault boundary and what a worker keeps between requests (issue 8, items 2 and 6).

A real Site and a real connection, served by a worker's event loop in this process
(serving.py); the guest side is not needed here (a
removed WasmDir through the real server is in tests/integration/test_fault_boundary.py). The
routing decision itself is tested as pure logic in test_router.py.
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import HOST, wait_for
from prefork_wasm.compiler import ModuleInfo
from prefork_wasm.conffile import parse_config
from prefork_wasm.connection import LINGER_SECONDS
from prefork_wasm.counters import LabelIndex, Recorder
from prefork_wasm.engine import WASM32_MEMORY_MAX, InstancePool
from prefork_wasm.generation import pool_for
from prefork_wasm.http1 import Limits
from prefork_wasm.logs import AccessLog, ErrorLog, LogFile
from prefork_wasm.messages import Request, Response
from prefork_wasm.paths import request_path
from prefork_wasm.router import Router
from prefork_wasm.scoreboard import Slot, words
from prefork_wasm.site import Site, prepare_guests
from serving import Serving

CONFIG = """\
Listen 8080
<Location /server-status>
    SetHandler server-status
</Location>
"""


def make_site(tmp_path: Path, status_page: object, access_logs: list[AccessLog] | None = None) -> Site:
    conf = tmp_path / "server.conf"
    conf.write_text(CONFIG)
    slot = Slot()
    config = parse_config(conf)
    pages = {"server-status": status_page} if status_page else {}
    error_log = ErrorLog(LogFile(str(tmp_path / "error_log")), "info")
    return Site(
        config,
        router=Router(config, access_logs or [], error_log, pages),
        guests=prepare_guests(config, None, {}),  # type: ignore[arg-type]  # no module to load
        runtime=None,  # type: ignore[arg-type]  # no Location here runs a guest
        access_logs=access_logs or [],
        slot=slot,
        recorder=Recorder(words(slot.counts), LabelIndex({}, {})),
        pages=pages,  # type: ignore[arg-type]
    )


def respond(site: Site, request: Request) -> Response:
    """Route and answer `request` as the connection does."""
    return site.respond(request, site.route(request), lambda response: None)


def make_request(target: str, body: bytes = b"") -> Request:
    return Request(
        "POST", target, "1.1", [], "192.0.2.1", 4321, 8080, "abc-7", 0.0, body=body, path=request_path(target)
    )


@pytest.mark.parametrize("target", ["/server-status", "/nowhere"])
def test_an_answered_request_is_not_kept_alive(tmp_path: Path, target: str) -> None:
    """After its response nothing in the Site holds the request, so its body is freed while idle."""
    site = make_site(tmp_path, lambda request: Response(200))
    request = make_request(target, body=b"x" * 1_000_000)
    decision = site.route(request)
    response = site.respond(request, decision, lambda response: None)
    site.finished(request, decision, response, 0)
    gone = weakref.ref(request)
    del request
    assert gone() is None


def test_a_bug_behind_respond_is_a_logged_500(tmp_path: Path) -> None:
    def broken(request: Request) -> Response:
        return {}["no such key"]  # type: ignore[no-any-return]

    site = make_site(tmp_path, broken)
    response = respond(site, make_request("/server-status/x%0Ay"))
    assert response.status == 500
    log = (tmp_path / "error_log").read_text()
    assert (
        "[client 192.0.2.1:4321] request abc-7: -: internal error: KeyError: 'no such key' at test_site.py:" in log
    )
    assert "(POST /server-status/x\\x0ay)" in log  # a decoded control character cannot forge a line
    assert len(log.splitlines()) == 1


class _Decided:
    """A routing decision as the connection reads it."""

    body_limit = 0


class _Crashing:
    """A site whose respond raises (a bug its own boundary did not catch)."""

    def __init__(self) -> None:
        self.answered: list[int] = []

    def route(self, request: Request) -> _Decided:
        return _Decided()

    def respond(self, request: Request, decision: _Decided, give_up: Callable[[Response], None]) -> Response:
        if request.path == "/crash":
            raise RuntimeError("bug")
        if request.path == "/split":  # a server bug that would split the head
            return Response(200, [(b"Location", b"/x\r\nSet-Cookie: owned=1")], b"fine")
        return Response(200, body=b"fine")

    def finished(self, request: Request, decision: _Decided, response: Response, sent: int) -> None:
        self.answered.append(response.status)


class _Worker:
    """A worker that is not stopping."""

    def new_request_id(self) -> str:
        return "id"

    def draining(self) -> bool:
        return False


LIMITS = Limits(
    timeout=5, keep_alive=True, keep_alive_timeout=1, max_keep_alive_requests=0,
    request_line=8190, field_size=8190, fields=100,
)


def serving(site: _Crashing, state: Callable[..., None] = lambda *a: None) -> Serving:
    """An event loop serving `site` in a thread, as a worker serves it (started)."""
    return Serving(site, _Worker(), LIMITS, state)


def until_closed(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def test_the_connection_answers_500_when_respond_raises(capsys: pytest.CaptureFixture[str]) -> None:
    site = _Crashing()
    with serving(site) as server, socket.create_connection((HOST, server.port)) as client:
        client.sendall(
            b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = until_closed(client)
    assert received.startswith(b"HTTP/1.1 500 ")
    assert b"HTTP/1.1 200 " in received and received.endswith(b"fine")  # the same connection goes on
    assert site.answered == [500, 200]
    assert "RuntimeError: bug" in capsys.readouterr().err


def test_a_response_whose_head_would_split_is_answered_500_and_the_connection_closed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = _Crashing()
    with serving(site) as server, socket.create_connection((HOST, server.port)) as client:
        client.sendall(b"GET /split HTTP/1.1\r\nHost: x\r\n\r\n")  # a keep-alive request
        received = until_closed(client)
    assert received.startswith(b"HTTP/1.1 500 ") and b"Connection: close\r\n" in received
    assert b"Set-Cookie" not in received and received.count(b"HTTP/1.1") == 1
    assert site.answered == [500]
    assert "ResponseHeadError: a control character" in capsys.readouterr().err


class _Recorder(_Crashing):
    """A site that lets the test act while the first response is being made."""

    def __init__(self, during_first: Callable[[], None]) -> None:
        super().__init__()
        self.during_first = during_first

    def respond(self, request: Request, decision: _Decided, give_up: Callable[[Response], None]) -> Response:
        if not self.answered:
            self.during_first()
        return Response(200, body=b"fine")


def test_a_next_request_that_is_already_there_reports_no_keep_alive_wait() -> None:
    """The keep-alive state (and with it a process title change) is for a wait that lasts; a
    request that arrives at once leaves the scoreboard and the title as they were."""
    states: list[str] = []
    clients: list[socket.socket] = []
    # Sent while the first is answered: in the socket, not yet read, when the worker waits.
    site = _Recorder(lambda: clients[0].sendall(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    with serving(site, lambda letter, *a: states.append(letter)) as server:
        with socket.create_connection((HOST, server.port)) as client:
            clients.append(client)
            client.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            received = until_closed(client)
    assert received.count(b"HTTP/1.1 200 ") == 2
    assert site.answered == [200, 200]
    assert "K" not in states


def test_the_access_record_carries_only_the_headers_a_format_logs(tmp_path: Path) -> None:
    site = make_site(
        tmp_path, None, [AccessLog(LogFile(str(tmp_path / "access_log")), '%s "%{User-Agent}i" %{X-Id}o %{Referer}i')]
    )
    request = make_request("/nowhere")
    request.headers = [(b"host", b"x"), (b"user-agent", b"agent/1"), (b"cookie", b"secret")]
    response = Response(200, headers=[(b"X-Id", b"7"), (b"Content-Type", b"text/plain")])
    record = site._access_record(request, site.route(request), response, 0, 0.0)
    assert record.request_headers == {"user-agent": "agent/1"}
    assert record.response_headers == {"x-id": "7"}
    site.finished(request, site.route(request), response, 0)
    assert (tmp_path / "access_log").read_text() == '200 "agent/1" 7 -\n'


def test_a_connection_the_client_closes_is_not_held_for_its_fin() -> None:
    """After a `Connection: close` request with nothing more sent, there is nothing to drain:
    the worker closes at once instead of lingering (up to LINGER_SECONDS) for the client's FIN."""
    with serving(_Crashing()) as server, socket.create_connection((HOST, server.port)) as client:
        client.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = until_closed(client)
        # The client's end is still open: a lingering close would hold the connection for
        # LINGER_SECONDS; without one the loop holds nothing well before half of that.
        wait_for(
            lambda: list(server.slot.held) == [0, 0, 0, 0, 0], timeout=LINGER_SECONDS / 2,
            what="the connection let go without a lingering close",
        )
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"fine")


def test_the_instance_pool_is_sized_by_the_largest_memory_limit_and_left_out_for_components(tmp_path: Path) -> None:
    def pool(limits: list[str], component: bool = False) -> InstancePool | None:
        conf = tmp_path / "pool.conf"
        for i in range(len(limits)):
            (tmp_path / f"m{i}.wasm").write_bytes(b"")  # the config checks that it exists
        conf.write_text("Listen 8080\n" + "".join(
            f"<Location /m{i}>\n    SetHandler wasm-handler\n    WasmModule m{i}.wasm\n{limit}</Location>\n"
            for i, limit in enumerate(limits)
        ))
        config = parse_config(conf)
        info = ModuleInfo(component, frozenset({"_start"}), "_start")
        modules = [loc.module for loc in config.locations if loc.module is not None]
        return pool_for(config, [info for _ in modules])

    assert pool(["    WasmMemoryLimit 1M\n", "    WasmMemoryLimit 2M\n"]) == InstancePool(2 << 20)
    assert pool(["    WasmMemoryLimit 1M\n", ""]) == InstancePool(WASM32_MEMORY_MAX)  # one without a limit
    assert pool(["    WasmMemoryLimit 1M\n"], component=True) is None
