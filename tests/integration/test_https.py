"""TLS through the real server and real TLS clients (issue 21): two name-based hosts on one TLS
port chosen by SNI, what a guest and the access log learn of the handshake, plain HTTP on the
port, Host against SNI (acceptance 1); certificates rotated by USR1 under wrk over HTTPS with
nothing lost (acceptance 2); an sslyze scan of the port (acceptance 3); a thousand connections
that never finish a handshake while a normal client is served within a second (acceptance 4).
The certificates are made here, by trustme."""

from __future__ import annotations

import http.client
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from harness import HOST, Server, env_of, free_port, wait_for
from prefork_wasm.tlsio import PLAIN_HTTP_REASON
from tlscerts import write_leaf

# Mozilla's "intermediate" profile (v5.7): the TLS 1.2 suites it allows (all forward secret
# AEAD) and TLS 1.3's.
MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}
MOZILLA_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Mozilla lists X25519, prime256v1 and secp384r1; OpenSSL's defaults add X448 and secp521r1, as
# strong, which Python's ssl (one curve at most, set_ecdh_curve) cannot take away per context.
STRONG_CURVES = {"X25519", "X448", "secp256r1", "prime256v1", "secp384r1", "secp521r1"}
HANDSHAKE_SECONDS = 8  # RequestReadTimeout handshake= of the test config: longer than the probing
# The first bytes of a ClientHello: a handshake record that never completes.
HALF_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 16


def tls_hosts(port: int, a: tuple[Path, Path], b: tuple[Path, Path]) -> str:
    """a.test (the port's default host) gives its guests mod_ssl's variables and logs them;
    b.test has its own certificate and gives only HTTPS."""
    env = """
        SetHandler wasm-handler
        WasmModule ${EXAMPLES}/env.wasm
        WasmEnableCGI On"""
    return f"""
<Location /server-status>
    SetHandler server-status
</Location>
Listen {HOST}:{port} https
RequestReadTimeout handshake={HANDSHAKE_SECONDS}
LogFormat "%v %{{SSL_PROTOCOL}}x %{{SSL_TLS_SNI}}x %{{HTTPS}}x %>s %U" tls
<VirtualHost {HOST}:{port}>
    ServerName a.test
    SSLEngine on
    SSLCertificateFile {a[0]}
    SSLCertificateKeyFile {a[1]}
    CustomLog logs/tls_log tls
    Redirect /moved /env
    <Location /env>{env}
        SSLOptions +StdEnvVars
    </Location>
    <Location /hello>
        SetHandler wasm-handler
        WasmModule ${{EXAMPLES}}/hello.wasm
    </Location>
</VirtualHost>
<VirtualHost {HOST}:{port}>
    ServerName b.test
    SSLEngine on
    SSLCertificateFile {b[0]}
    SSLCertificateKeyFile {b[1]}
    <Location /env>{env}
    </Location>
</VirtualHost>
"""


@dataclass
class TLSServer:
    server: Server
    port: int
    ca: trustme.CA
    folder: Path

    def client_context(self, check_hostname: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.check_hostname = check_hostname
        return context

    def connect(self, name: str | None = "a.test", check_hostname: bool = True) -> ssl.SSLSocket:
        raw = socket.create_connection((HOST, self.port), timeout=10)
        return self.client_context(check_hostname).wrap_socket(raw, server_hostname=name)

    def peer_names(self, name: str | None) -> list[str]:
        """The DNS names of the certificate the server presents for SNI `name`."""
        with self.connect(name, check_hostname=False) as sock:
            cert = sock.getpeercert()
        return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]  # type: ignore[index, misc]

    def get(self, path: str, host: str = "a.test", sni: str | None = "a.test") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=10, context=self.client_context(False))
        if sni is not None:
            conn.sock = self.connect(sni, check_hostname=False)
        try:
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


def start_tls_server(root: Path, start_servers: int = 2) -> TLSServer:
    ca = trustme.CA()
    certs = root / "certs"
    certs.mkdir(parents=True)
    port = free_port()
    server = Server(root, tls_hosts(port, write_leaf(ca, certs, "a.test"), write_leaf(ca, certs, "b.test")),
                    start_servers=start_servers)
    server.start()
    return TLSServer(server, port, ca, certs)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    served = start_tls_server(tmp_path_factory.mktemp("tls"))
    yield served
    served.server.stop()


def test_two_hosts_on_one_tls_port_are_chosen_by_sni_and_guests_learn_the_handshake(tls: TLSServer) -> None:
    assert tls.peer_names("a.test") == ["a.test"]
    assert tls.peer_names("b.test") == ["b.test"]
    assert tls.peer_names("unknown.test") == ["a.test"]  # an unknown name gets the first host's, as Apache
    assert tls.peer_names(None) == ["a.test"]
    status, _, body = tls.get("/env/x", "a.test", "a.test")
    env = env_of(body)
    assert status == 200 and env["HTTPS"] == "on" and env["REQUEST_SCHEME"] == "https"
    assert env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and env["SSL_TLS_SNI"] == "a.test"
    assert env["SERVER_PORT"] == str(tls.port) and env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_SERVER_S_DN"] and env["SSL_CIPHER"]
    status, _, body = tls.get("/env/x", "b.test", "b.test")
    env = env_of(body)  # SSLOptions without +StdEnvVars: HTTPS, but no SSL_* variable
    assert status == 200 and env["HTTPS"] == "on" and not any(name.startswith("SSL_") for name in env)
    status, headers, _ = tls.get("/moved", "a.test", "a.test")
    assert status == 302 and headers["location"] == "https://a.test/env"
    log = tls.server.root / "logs" / "tls_log"
    wait_for(lambda: log.exists() and "a.test TLSv1.3 a.test on 200 /env/x" in log.read_text(), what="the TLS log line")


def test_plain_http_on_the_tls_port_gets_apache_s_400(tls: TLSServer) -> None:
    with socket.create_connection((HOST, tls.port), timeout=10) as sock:
        sock.sendall(b"GET /env HTTP/1.1\r\nHost: a.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert PLAIN_HTTP_REASON.encode() in data


def test_a_host_that_differs_from_the_sni_name_is_misdirected(tls: TLSServer) -> None:
    assert tls.get("/env/x", "b.test", "a.test")[0] == 421
    assert tls.get("/env/x", "a.test", "b.test")[0] == 421


def test_sslyze_finds_nothing_below_tls_1_2_and_only_mozilla_intermediate_suites(tls: TLSServer) -> None:
    from sslyze import (
        Scanner,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    scanner = Scanner()
    location = ServerNetworkLocation("a.test", tls.port, ip_address=HOST)
    scanner.queue_scans([ServerScanRequest(location, scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER)])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    scans = result.scan_result
    assert scans is not None
    for old in (scans.ssl_2_0_cipher_suites, scans.ssl_3_0_cipher_suites, scans.tls_1_0_cipher_suites,
                scans.tls_1_1_cipher_suites):
        assert old.result is not None and old.result.accepted_cipher_suites == []
    assert scans.tls_1_2_cipher_suites.result is not None and scans.tls_1_3_cipher_suites.result is not None
    tls12 = {suite.cipher_suite.openssl_name for suite in scans.tls_1_2_cipher_suites.result.accepted_cipher_suites}
    tls13 = {suite.cipher_suite.name for suite in scans.tls_1_3_cipher_suites.result.accepted_cipher_suites}
    assert tls12 and tls12 <= MOZILLA_INTERMEDIATE_TLS12, tls12 - MOZILLA_INTERMEDIATE_TLS12
    assert tls13 and tls13 <= MOZILLA_TLS13
    assert scans.elliptic_curves.result is not None
    curves = {curve.name for curve in scans.elliptic_curves.result.supported_curves or ()}
    assert curves and curves <= STRONG_CURVES, curves
    # sslyze's own check against the profile: only what the test's CA makes may fail (no public
    # trust, trustme's long life span), and the curves above.
    try:
        profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
        check_server_against_tls_configuration(result, profile)
    except ServerNotCompliantWithTlsConfiguration as e:
        assert set(e.issues) <= {"certificate_path_validation", "maximum_certificate_lifespan", "tls_curves"}, e.issues


def _hold_silent(port: int, count: int, half: int, lifetimes: list[float], said: list[bytes]) -> None:
    """Open `count` connections that send nothing (`half` of them half a ClientHello) and keep
    each until the server closes it, noting its lifetime and what it said; returns once all are
    closed, or after the deadline and 10 s more."""
    selector = selectors.DefaultSelector()
    for n in range(count):
        sock = socket.create_connection((HOST, port), timeout=10)
        if n < half:
            sock.sendall(HALF_HELLO)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, time.monotonic())
    end = time.monotonic() + HANDSHAKE_SECONDS + 10
    while selector.get_map() and time.monotonic() < end:
        for key, _ in selector.select(0.2):
            sock, opened = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(100)
            except OSError:
                data = b"reset"
            lifetimes.append(time.monotonic() - opened)
            if data:
                said.append(data)
            selector.unregister(sock)
            sock.close()
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


def test_a_thousand_silent_connections_keep_no_client_waiting_and_end_at_the_handshake_deadline(
    tls: TLSServer,
) -> None:
    logged_before = len(tls.server.log())
    lifetimes: list[float] = []
    said: list[bytes] = []
    holder = threading.Thread(target=_hold_silent, args=(tls.port, 1000, 50, lifetimes, said))
    holder.start()
    waits = []
    try:
        wait_for(lambda: handshakes(tls.server) >= 1000, timeout=10, what="the silent connections held")
        # While all of them are held (the first closes at the handshake deadline), a client
        # is served at once, every time.
        until = time.monotonic() + HANDSHAKE_SECONDS - 2.0
        while time.monotonic() < until:
            started = time.monotonic()
            assert tls.get("/hello")[0] == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.2)
    finally:
        holder.join(HANDSHAKE_SECONDS + 30)
    assert len(waits) >= 10 and max(waits) < 1.0, sorted(waits)[-5:]
    assert said == []  # closed without a word, as Apache closes a handshake that times out
    assert len(lifetimes) == 1000, "the handshake deadline closed them"
    assert min(lifetimes) >= HANDSHAKE_SECONDS - 0.5, sorted(lifetimes)[:5]
    assert max(lifetimes) < HANDSHAKE_SECONDS + 2.5, sorted(lifetimes)[-5:]
    errors = [line for line in tls.server.log()[logged_before:].splitlines() if ":error]" in line]
    assert errors == []
    assert "SSL handshake timed out" in tls.server.log()  # at info


def handshakes(server: Server) -> int:
    """The connections held in their handshake (server-status's ConnsAsyncHandshake)."""
    status, _, body, _ = server.get("/server-status?auto")
    found = re.search(rb"ConnsAsyncHandshake: (\d+)", body)
    assert status == 200 and found, body
    return int(found[1])


def _wrk(port: int, seconds: int, out: list[str]) -> None:
    result = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s", f"https://{HOST}:{port}/hello"],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    )
    out.append(result.stdout + result.stderr)


def test_certificates_rotated_by_usr1_under_wrk_over_https_lose_no_request(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is needed (scripts/apt-install wrk)")
    served = start_tls_server(tmp_path)
    try:
        out: list[str] = []
        load = threading.Thread(target=_wrk, args=(served.port, 16, out))
        load.start()
        cert, key = served.folder / "a.test.pem", served.folder / "a.test.key"
        for round_ in range(5):
            renewed = served.folder / f"renewed{round_}"
            renewed.mkdir()
            new_cert, new_key = write_leaf(served.ca, renewed, "a.test")
            shutil.copy(new_key, key)
            shutil.copy(new_cert, cert)
            served.server.signal(signal.SIGUSR1)
            wait_for(lambda: presented(served) == ssl.PEM_cert_to_DER_cert(cert.read_text()), timeout=10,
                     what=f"the certificate of round {round_}")
        load.join(40)
        assert not load.is_alive() and out, "wrk did not finish"
        report = out[0]
        requests = re.search(r"(\d+) requests in", report)
        assert requests and int(requests[1]) > 100, report
        assert "Socket errors" not in report and "Non-2xx" not in report, report
    finally:
        served.server.stop()


def presented(served: TLSServer) -> bytes | None:
    """The certificate a new connection gets (DER)."""
    try:
        with served.connect("a.test", check_hostname=False) as sock:
            return sock.getpeercert(binary_form=True)
    except OSError:
        return None


def test_a_restart_closes_idle_tls_connections_with_close_notify_and_answers_the_next_request(
    tmp_path: Path,
) -> None:
    """HUP: the old workers cannot hand TLS connections over; they answer what arrives with
    Connection: close and end idle ones cleanly (close_notify) within 2 s, before the master's
    stop at 3 s: only a request in flight then may be cut."""
    served = start_tls_server(tmp_path, start_servers=1)
    try:
        context = served.client_context()
        idle, busy = (
            context.wrap_socket(socket.create_connection((HOST, served.port), timeout=10), server_hostname="a.test",
                                suppress_ragged_eofs=False)
            for _ in range(2)
        )
        for sock in (idle, busy):
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        served.server.signal(signal.SIGHUP)
        wait_for(lambda: "generation 1 configured" in served.server.log(), what="the restart")
        busy.sendall(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
        answer = busy.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in answer
        started = time.monotonic()
        assert idle.recv(100) == b""  # close_notify: a TLS connection that ends (SSLEOFError without it)
        assert time.monotonic() - started < 2.5
        assert served.get("/hello")[0] == 200  # the new generation serves new connections
        for sock in (idle, busy):
            sock.close()
    finally:
        served.server.stop()
