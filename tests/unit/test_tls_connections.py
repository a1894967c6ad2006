"""TLS connections in a worker's event loop (serving.py, in this process) with the contexts a
config with two name-based TLS hosts makes (tls.listener_contexts), from trustme certificates:
the handshake held in epoll under its deadline, plain HTTP on the port, what a request learns
of its handshake (Request.tls), keep-alive, pipelining, large bodies both ways and file bodies,
and a leaving worker that keeps its TLS connections. The whole server with its config is
tests/integration/test_https.py."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from harness import HOST, wait_for
from prefork_wasm.config import Listen
from prefork_wasm.held import HANDSHAKE, READING
from prefork_wasm.http1 import Limits
from prefork_wasm.messages import FileBody, Request, Response
from prefork_wasm.reqtimeout import ReadTimeout
from prefork_wasm.scoreboard import HAND_OVER
from prefork_wasm.tls import HostContext, listener_contexts
from prefork_wasm.tlsio import PLAIN_HTTP_REASON
from serving import Decision, PathSite, Serving
from test_config import load, server_root  # noqa: F401 (autouse fixture "root")
from tlscerts import write_leaf

LIMITS = Limits(
    timeout=5, keep_alive=True, keep_alive_timeout=0.5, max_keep_alive_requests=0,
    request_line=8190, field_size=8190, fields=100, header_read=ReadTimeout(1, 3, 10),
    handshake_read=ReadTimeout(1),
)
BIG = 300_000


class Site(PathSite):
    """Records each request; /big answers BIG bytes, /file a file body, /echo the request's
    body, anything else its path."""

    def __init__(self, file: Path | None = None) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.file = file

    def respond(self, request: Request, decision: Decision, give_up: Callable[[Response], None]) -> Response:
        self.requests.append(request)
        if request.path == "/big":
            return Response(200, body=b"x" * BIG)
        if request.path == "/echo":
            assert isinstance(request.body, bytes)
            return Response(200, body=request.body)
        if request.path == "/file" and self.file is not None:
            size = self.file.stat().st_size
            return Response(200, body=FileBody(open(self.file, "rb"), 0, size))  # noqa: SIM115 - closed when sent
        return super().respond(request, decision, give_up)


@dataclasses.dataclass
class Certificates:
    ca: trustme.CA
    a: HostContext  # the port's default context: a.test's, whose SNI callback picks b.test's
    client: ssl.SSLContext


TWO_HOSTS = "".join(
    f"<VirtualHost 127.0.0.1:8443>\n    ServerName {name}\n    SSLEngine on\n"
    f"    SSLCertificateFile {name}.pem\n    SSLCertificateKeyFile {name}.key\n</VirtualHost>\n"
    for name in ("a.test", "b.test")
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(root: Path, ca: trustme.CA) -> Certificates:
    """The port's default context (a.test's, whose SNI callback picks b.test's) as the master
    makes it from the config."""
    for name in ("a.test", "b.test"):
        write_leaf(ca, root, name)
    a = listener_contexts(load("Listen 127.0.0.1:8443 https\n" + TWO_HOSTS)).by_listen[Listen("127.0.0.1", 8443)]
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Certificates(ca, a, client)


@pytest.fixture
def serving(certs: Certificates) -> Iterator[tuple[Serving, Site]]:
    site = Site()
    with Serving(site, site, LIMITS, tls=certs.a) as server:
        yield server, site


def tls_connect(certs: Certificates, port: int, name: str = "a.test") -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=10)
    return certs.client.wrap_socket(raw, server_hostname=name)


def response(client: socket.socket) -> tuple[bytes, bytes]:
    """The next response: its head and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = client.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return head, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n".encode()


def test_a_request_over_tls_is_served_and_knows_its_handshake(
    serving: tuple[Serving, Site], certs: Certificates
) -> None:
    server, site = serving
    with tls_connect(certs, server.port, "b.test") as client:
        assert client.getpeercert()["subjectAltName"] == (("DNS", "b.test"),)  # type: ignore[index]
        for _ in range(2):  # kept alive: the same session serves the next request
            client.sendall(get("/hello"))
            head, body = response(client)
            assert head.startswith(b"HTTP/1.1 200 ") and body == b"/hello"
    tls = site.requests[0].tls
    assert tls is not None and tls.protocol == "TLSv1.3" and tls.server_name == "b.test"
    assert isinstance(tls.context, HostContext) and tls.context.host is not None
    assert tls.context.host.server_name == "b.test" and tls.context.server_vars["SSL_SERVER_S_DN"]
    assert tls.bits >= 128 and tls.cipher.startswith("TLS_")
    assert site.requests[1].tls is tls


def test_without_sni_the_default_host_answers_and_no_name_is_recorded(
    serving: tuple[Serving, Site], certs: Certificates
) -> None:
    server, site = serving
    client_context = ssl.create_default_context()
    certs.ca.configure_trust(client_context)
    client_context.check_hostname = False
    with client_context.wrap_socket(socket.create_connection((HOST, server.port), timeout=10)) as client:
        client.sendall(get("/hello"))
        assert response(client)[1] == b"/hello"
    tls = site.requests[0].tls
    assert tls is not None and tls.server_name == "" and tls.context is certs.a
    assert certs.a.host is not None and certs.a.host.server_name == "a.test"


def test_plain_http_on_the_tls_port_gets_apache_s_400_in_plain_text(serving: tuple[Serving, Site]) -> None:
    server, site = serving
    with socket.create_connection((HOST, server.port), timeout=10) as client:
        client.sendall(get("/hello"))
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in data
    assert PLAIN_HTTP_REASON.encode() in data
    assert site.requests == []
    assert data.endswith(b"\r\n\r\n" + APACHE_PLAIN_HTTP_PAGE)


# What Apache 2.4.71 (Debian 12, mod_ssl) sent for the same request, read from a real apache2.
APACHE_PLAIN_HTTP_PAGE = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
    b"<html><head>\n<title>400 Bad Request</title>\n</head><body>\n<h1>Bad Request</h1>\n"
    b"<p>Your browser sent a request that this server could not understand.<br />\n"
    b"Reason: You're speaking plain HTTP to an SSL-enabled server port.<br />\n"
    b" Instead use the HTTPS scheme to access this URL, please.<br />\n</p>\n</body></html>\n"
)


def test_silent_and_half_hello_connections_are_held_as_handshakes_and_cut_at_the_deadline(
    serving: tuple[Serving, Site], certs: Certificates
) -> None:
    server, _ = serving
    silent = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(5)]
    half = socket.create_connection((HOST, server.port), timeout=10)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    wait_for(lambda: server.slot.held[HANDSHAKE] == 6, what="six connections in their handshake")
    with tls_connect(certs, server.port) as client:  # meanwhile a client is served at once
        client.sendall(get("/hello"))
        assert response(client)[1] == b"/hello"
    started = time.monotonic()
    for sock in [*silent, half]:
        assert sock.recv(100) == b""  # closed by RequestReadTimeout handshake=1
        sock.close()
    assert time.monotonic() - started < 2.5
    wait_for(lambda: server.slot.held[HANDSHAKE] == 0, what="no handshake held")


def test_large_bodies_pipelined_requests_and_file_bodies_cross_tls(certs: Certificates) -> None:
    with tempfile.NamedTemporaryFile() as file:
        content = os.urandom(BIG)
        file.write(content)
        file.flush()
        site = Site(Path(file.name))
        with Serving(site, site, LIMITS, tls=certs.a) as server, tls_connect(certs, server.port) as client:
            upload = os.urandom(200_000)
            client.sendall(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % len(upload) + upload)
            assert response(client)[1] == upload
            client.sendall(get("/big") + get("/file") + get("/hello"))  # three records' worth at once
            assert response(client)[1] == b"x" * BIG
            assert response(client)[1] == content
            assert response(client)[1] == b"/hello"


def test_a_leaving_worker_keeps_its_tls_connections_and_drains_them(certs: Certificates) -> None:
    first, second = Site(), Site()
    with Serving(first, first, LIMITS, tls=certs.a) as leaving:
        first.drains = lambda: leaving.loop.draining
        with Serving(second, second, LIMITS, hand_over=leaving.hand_over, tls=certs.a):
            kept, reading = tls_connect(certs, leaving.port), tls_connect(certs, leaving.port)
            kept.sendall(get("/hello"))
            response(kept)
            reading.sendall(get("/hello")[:12])
            wait_for(lambda: leaving.slot.held[READING] == 1, what="a head being read")
            going = threading.Thread(target=leaving.leave, args=(HAND_OVER,))
            going.start()
            wait_for(lambda: leaving.loop.draining, what="the loop draining")
            kept.sendall(get("/hello"))  # answered by the same worker, which says the connection ends
            reading.sendall(get("/hello")[12:])
            for client in (kept, reading):
                head, body = response(client)
                assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head
                assert client.recv(100) == b""  # then close_notify: a clean end
                client.close()
            going.join(10)
            assert not going.is_alive()
    assert len(first.requests) == 3 and second.requests == []
