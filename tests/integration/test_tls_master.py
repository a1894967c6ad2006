"""The master's side of TLS through the real command: `-t` checks each key against its
certificate (acceptance 1, last part), and a restart reads the certificates anew: a renewed one
is taken by `-k graceful`, a key that does not match is refused with its FILE:LINE while the
old generation serves on (as a broken module is)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import trustme

from harness import HELLO, Server, free_port, wait_for
from tlscerts import write_leaf


def run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server.command(*args), capture_output=True, text=True, timeout=120, cwd=server.root, check=False
    )


def tls_host(port: int, cert: Path, key: Path) -> str:
    return f"""
Listen 127.0.0.1:{port} https
<VirtualHost 127.0.0.1:{port}>
    ServerName a.test
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
</VirtualHost>
"""


def presented(port: int, ca: trustme.CA) -> bytes:
    """The certificate a new TLS connection to `port` gets (DER), the client trusting `ca`."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(
        raw, server_hostname="a.test"
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def key_line(server: Server) -> int:
    lines = server.conf.read_text().splitlines()
    return next(n for n, text in enumerate(lines, 1) if text.strip().startswith("SSLCertificateKeyFile"))


def test_check_refuses_a_key_that_does_not_match_its_certificate_at_its_line(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, _ = write_leaf(ca, tmp_path, "a.test")
    _, other_key = write_leaf(ca, tmp_path, "b.test")
    server = make_server(HELLO + tls_host(free_port(), cert, other_key), start=False)
    result = run(server, "-t")
    assert result.returncode == 1 and result.stdout == "", (result.stdout, result.stderr)
    assert (
        f"prefork-wasm: {server.conf}:{key_line(server)}: SSLCertificateKeyFile: the key in {other_key} does not "
        f"match the certificate in {cert}"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_check_passes_a_matching_key_and_warns_about_what_clients_will_see(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    cert, key = write_leaf(trustme.CA(), tmp_path, "a.test")
    key.chmod(0o644)
    server = make_server(HELLO + tls_host(free_port(), cert, key), start=False)
    result = run(server, "-t")
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n"), result.stderr
    assert f"warning: {server.conf}:{key_line(server)}: the key file {key} is readable by every user" in result.stderr
    assert "the chain is incomplete: no certificate of issuer" in result.stderr  # trustme's CA is no system CA


def test_a_restart_reads_the_certificates_anew_and_refuses_a_mismatched_key(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, key = write_leaf(ca, tmp_path, "a.test")
    port = free_port()
    server = make_server(HELLO + tls_host(port, cert, key))
    assert "listening on https://127.0.0.1:" in server.log()
    first = presented(port, ca)
    # A renewed certificate and key: the graceful restart takes them.
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    new_cert, new_key = write_leaf(ca, renewed, "a.test")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    result = run(server, "-k", "graceful")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "generation 1 configured" in server.log()
    # Each generation says what its certificates are warned about (trustme's CA is no system CA).
    assert server.log().count("[ssl:warn]") == 2 and "the chain is incomplete" in server.log()
    # New connections get the renewed certificate (polled: an old worker that has not yet seen
    # its signal may take one more connection).
    renewed_der = wait_for(lambda: (der := presented(port, ca)) != first and der, what="the renewed certificate")
    # A certificate replaced without its key: refused, generation 1 serves on.
    _, stray_key = write_leaf(ca, renewed, "b.test")
    shutil.copy(stray_key, key)
    result = run(server, "-k", "graceful")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "restart failed, generation 1 still serving:" in result.stderr
    assert f"{server.conf}:{key_line(server)}: SSLCertificateKeyFile: the key in {key} does not match" in result.stderr
    assert server.get("/hello")[0] == 200
    assert presented(port, ca) == renewed_der
