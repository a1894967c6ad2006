"""The master's TLS contexts (tls.py) and its certificate checks (tlscheck.py), shown by
handshakes in memory (ssl.MemoryBIO: no sockets, no processes) with certificates trustme and
cryptography's builder make at test time."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from prefork_wasm.config import Listen, ServerConfig
from prefork_wasm.generation import StartupError, tls_contexts
from prefork_wasm.tls import HostContext, asn1_time, listener_contexts, server_vars
from prefork_wasm.tlscheck import (
    CertificateError,
    chain_problems,
    expiry,
    names_problem,
    others_may_read,
    read_materials,
    trusted_roots,
)
from test_config import HELLO, load, server_root  # noqa: F401 (autouse fixture "root")
from tlscerts import self_signed, write_leaf

NOW = datetime.datetime(2026, 12, 6, 22, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(autouse=True)
def certificates(root: Path, ca: trustme.CA) -> None:
    for name in ("a.test", "b.test"):
        write_leaf(ca, root, name, chain=True)


def two_hosts(*extra_a: str) -> ServerConfig:
    """Two name-based hosts on one TLS port, each with its own certificate (acceptance 1's shape);
    `extra_a`: lines for the first, the default host of the address."""
    hosts = "".join(
        f"<VirtualHost 127.0.0.1:8443>\n    ServerName {name}\n    ServerAlias www.{name}\n    SSLEngine on\n"
        f"    SSLCertificateFile {name}.pem\n    SSLCertificateKeyFile {name}.key\n"
        + "".join(f"    {line}\n" for line in (extra_a if name == "a.test" else ()))
        + "</VirtualHost>\n"
        for name in ("a.test", "b.test")
    )
    return load(HELLO + "Listen 127.0.0.1:8443 https\n" + hosts)


def server_tls(cert: str, key: str | None = None, *extra: str) -> ServerConfig:
    """The main server with SSLEngine on (a gunicorn --certfile/--keyfile shape): every Listen speaks TLS."""
    lines = ["Listen 8443", "SSLEngine on", f"SSLCertificateFile {cert}", *([f"SSLCertificateKeyFile {key}"] if key
             else []), *extra]
    return load(HELLO + "".join(f"{line}\n" for line in lines))


def port_8443(config: ServerConfig) -> HostContext:
    return listener_contexts(config, NOW).by_listen[Listen("", 8443)]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, sni: str | None) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A whole handshake between two SSLObjects over memory buffers: (server side, client side)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=sni)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {id(client_side): False, id(server_side): False}
    for _ in range(20):
        for side in (client_side, server_side):
            if not done[id(side)]:
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server_side, client_side
    raise AssertionError("the handshake did not finish")


def client(ca: trustme.CA, check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = check_hostname
    return context


def peer_names(side: ssl.SSLObject) -> list[str]:
    cert = side.getpeercert()
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


def test_each_tls_listener_gets_its_default_hosts_context(root: Path) -> None:
    contexts = listener_contexts(two_hosts(), NOW)
    assert list(contexts.by_listen) == [Listen("127.0.0.1", 8443)]
    default = contexts.by_listen[Listen("127.0.0.1", 8443)]
    assert isinstance(default, HostContext) and default.host is not None and default.host.server_name == "a.test"
    assert default.settings.certificate_file == root / "a.test.pem"


@pytest.mark.parametrize(
    "sni, served",
    [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("www.b.test", "b.test"),  # a ServerAlias answers as the router's Host does
        ("B.TEST.", "b.test"),  # names compare without case and trailing dot
        ("unknown.test", "a.test"),  # Apache: an unknown name gets the default (first) host's
        (None, "a.test"),  # no SNI: the default host's
    ],
)
def test_sni_picks_the_certificate_of_the_host_it_names(ca: trustme.CA, sni: str | None, served: str) -> None:
    default = listener_contexts(two_hosts(), NOW).by_listen[Listen("127.0.0.1", 8443)]
    server_side, client_side = handshake(default, client(ca, check_hostname=False), sni)
    assert peer_names(client_side) == [served]
    context = server_side.context
    assert isinstance(context, HostContext) and context.host is not None and context.host.server_name == served


def test_protocols_ciphers_and_options_follow_the_settings(ca: trustme.CA) -> None:
    plain = listener_contexts(two_hosts(), NOW).by_listen[Listen("127.0.0.1", 8443)]
    assert (plain.minimum_version, plain.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert plain.options & ssl.OP_NO_COMPRESSION and plain.options & ssl.OP_NO_RENEGOTIATION
    assert not plain.options & (ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE)  # Apache's defaults
    assert handshake(plain, client(ca), "a.test")[0].version() == "TLSv1.3"
    config = two_hosts("SSLProtocol -all +TLSv1.2", "SSLSessionTickets off", "SSLHonorCipherOrder on",
                       "SSLCipherSuite ECDHE-ECDSA-CHACHA20-POLY1305")
    default = listener_contexts(config, NOW).by_listen[Listen("127.0.0.1", 8443)]
    assert (default.minimum_version, default.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    assert default.options & ssl.OP_NO_TICKET and default.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    # The default host's protocols and options make every handshake on its address; the SNI-chosen
    # host's certificate and TLS 1.2 suites switch with it.
    for sni, cipher in (("a.test", "ECDHE-ECDSA-CHACHA20-POLY1305"), ("b.test", "ECDHE-ECDSA-AES128-GCM-SHA256")):
        server_side, client_side = handshake(default, client(ca), sni)
        assert (server_side.version(), server_side.cipher()[0], peer_names(client_side)) == ("TLSv1.2", cipher, [sni])


def test_a_host_whose_handshake_settings_differ_from_the_default_hosts_is_told(ca: trustme.CA) -> None:
    """mod_ssl switches protocols and options with the SNI-chosen host; Python's ssl switches the
    certificate only, so the difference is a warning at the host's line."""
    config = two_hosts("SSLProtocol TLSv1.3", "SSLSessionTickets off")
    (warning,) = [w for w in config.warnings if "differ from the default host's" in w]
    assert "SSLProtocol, SSLSessionTickets of this host differ from the default host's (<VirtualHost> at" in warning
    assert "SNI switches the certificate and cipher suites only" in warning


def test_a_tls12_only_client_cannot_reach_a_tls13_only_host(ca: trustme.CA) -> None:
    default = port_8443(server_tls("a.test.pem", "a.test.key", "SSLProtocol TLSv1.3"))
    old = client(ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(default, old, "a.test")


def test_server_vars_are_mod_ssls(root: Path) -> None:
    cert_path, _ = self_signed(root, "c.test", datetime.datetime(2027, 1, 5, 12, 0, tzinfo=datetime.UTC))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    found = server_vars(cert)
    assert found["SSL_SERVER_S_DN"] == found["SSL_SERVER_I_DN"] == "CN=c.test,C=DE"  # RFC 2253: most specific first
    assert found["SSL_SERVER_S_DN_CN"] == "c.test" and found["SSL_SERVER_S_DN_C"] == "DE"
    assert found["SSL_SERVER_M_SERIAL"] == "0A1B" and found["SSL_SERVER_M_VERSION"] == "3"
    assert found["SSL_SERVER_V_END"] == "Jan  5 12:00:00 2027 GMT"
    assert (found["SSL_SERVER_A_KEY"], found["SSL_SERVER_A_SIG"]) == ("id-ecPublicKey", "ecdsa-with-SHA256")
    assert found["SSL_SERVER_SAN_DNS_0"] == "c.test"
    assert server_vars(cert, legacy_dn=True)["SSL_SERVER_S_DN"] == "/C=DE/CN=c.test"  # OpenSSL's old one-line form


def test_rsa_keys_name_their_algorithms_as_openssl_does(root: Path) -> None:
    cert_path, _ = write_leaf(trustme.CA(key_type=trustme.KeyType.RSA), root, "rsa.test", key_type=trustme.KeyType.RSA)
    found = server_vars(x509.load_pem_x509_certificate(cert_path.read_bytes()))
    assert (found["SSL_SERVER_A_KEY"], found["SSL_SERVER_A_SIG"]) == ("rsaEncryption", "sha256WithRSAEncryption")


def test_asn1_time_pads_the_day_as_openssl_prints_it() -> None:
    assert asn1_time(NOW) == "Dec  6 22:00:00 2026 GMT"
    assert asn1_time(datetime.datetime(2026, 11, 16, 1, 2, 3, tzinfo=datetime.UTC)) == "Nov 16 01:02:03 2026 GMT"


# --- the checks (-t and each start) ------------------------------------------------------------


def test_a_key_that_does_not_match_its_certificate_is_refused_at_the_key_line(root: Path) -> None:
    with pytest.raises(StartupError) as info:
        tls_contexts(server_tls("a.test.pem", "b.test.key"))
    line = HELLO.count("\n") + 4
    assert str(info.value).startswith(f"server.conf:{line}: SSLCertificateKeyFile: the key in {root}/b.test.key "
                                      f"does not match the certificate in {root}/a.test.pem")


def test_a_key_in_the_certificate_file_serves(root: Path, ca: trustme.CA) -> None:
    combined = root / "both.pem"
    combined.write_bytes((root / "a.test.pem").read_bytes() + (root / "a.test.key").read_bytes())
    default = port_8443(server_tls("both.pem"))
    assert peer_names(handshake(default, client(ca), "a.test")[1]) == ["a.test"]


def test_a_certificate_file_without_a_key_and_no_key_file_is_refused(root: Path) -> None:
    config = server_tls("a.test.pem")
    with pytest.raises(CertificateError, match=r"SSLCertificateFile: no private key in .*a\.test\.pem; name the key"):
        listener_contexts(config, NOW)


def test_an_encrypted_key_is_refused_with_how_to_decrypt_it(root: Path) -> None:
    key = serialization.load_pem_private_key((root / "a.test.key").read_bytes(), None)
    (root / "locked.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ))
    config = server_tls("a.test.pem", "locked.key")
    with pytest.raises(CertificateError, match=r"is encrypted \(it needs a pass phrase\); decrypt it for the server: "
                                               r"openssl pkey -in .*locked\.key -out"):
        listener_contexts(config, NOW)


def test_a_file_without_a_certificate_is_refused(root: Path) -> None:
    (root / "empty.pem").write_text("not a certificate\n")
    config = server_tls("empty.pem", "a.test.key")
    with pytest.raises(CertificateError, match=r"server.conf:\d+: SSLCertificateFile: .*empty\.pem holds no PEM"):
        listener_contexts(config, NOW)


def test_a_complete_chain_passes_and_a_missing_intermediate_is_named(root: Path, ca: trustme.CA) -> None:
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("d.test")
    chain = [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]
    root_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    assert chain_problems([*chain, root_cert], frozenset()) == []  # ends self-signed
    assert chain_problems(chain, frozenset({root_cert.subject})) == []  # ends at a CA of the trust store
    (problem,) = chain_problems(chain[:1], frozenset({root_cert.subject}))
    assert f"no certificate of issuer '{chain[1].subject.rfc4514_string()}'" in problem
    assert "append the intermediate certificate to SSLCertificateFile" in problem
    (problem,) = chain_problems([chain[0], root_cert], frozenset())
    assert "which did not issue it: put the chain in order" in problem


def test_the_system_trust_store_is_read() -> None:
    assert len(trusted_roots()) > 10  # Debian's ca-certificates


@pytest.mark.parametrize(
    "days, warning",
    [
        (400, None),
        (31, None),
        (29, "expires on 2027-01-04 22:00:00 UTC (in 29 days): renew it"),
        (-1, "expired on 2026-12-05 22:00:00 UTC: renew it"),
    ],
)
def test_a_certificate_near_its_end_is_a_warning_with_its_date(root: Path, days: int, warning: str | None) -> None:
    cert_path, _ = self_signed(root, "e.test", NOW + datetime.timedelta(days=days))
    found = expiry(x509.load_pem_x509_certificate(cert_path.read_bytes()), NOW)
    assert found == [] if warning is None else warning in found[0]


def test_a_key_file_others_may_read_is_a_warning_with_the_fix(root: Path) -> None:
    key = root / "a.test.key"
    assert others_may_read(key) is None  # 0600
    key.chmod(0o644)
    assert others_may_read(key) == f"the key file {key} is readable by every user (mode 0644): chmod o-r {key}"


def test_warnings_name_their_lines(root: Path) -> None:
    (root / "a.test.key").chmod(0o644)
    config = server_tls("a.test.pem", "a.test.key")
    contexts = tls_contexts(config)
    line = HELLO.count("\n") + 4
    assert any(w.startswith(f"server.conf:{line}: the key file") for w in contexts.warnings)
    assert contexts.warnings[0] not in config.warnings  # logged by each generation, printed by -t


def test_materials_read_the_chain_file_after_the_certificate(root: Path, ca: trustme.CA) -> None:
    leaf, key = write_leaf(ca, root, "f.test")
    (root / "ca.pem").write_bytes(ca.cert_pem.bytes())
    config = server_tls(str(leaf), str(key), "SSLCertificateChainFile ca.pem")
    materials = read_materials(config.tls)
    assert len(materials.chain) == 2 and chain_problems(materials.chain, frozenset()) == []


@pytest.mark.parametrize(
    "names, server_name, named",
    [
        (["a.test"], "a.test", True),
        (["*.example.org"], "www.example.org", True),  # a wildcard covers one label
        (["*.example.org"], "a.b.example.org", False),
        (["*.example.org"], "example.org", False),
        (["b.test", "www.b.test"], "a.test", False),
    ],
)
def test_a_certificate_that_does_not_name_its_host_is_a_warning(names: list[str], server_name: str,
                                                                  named: bool) -> None:
    """Apache's AH01909: 'server certificate does NOT include an ID which matches the server name'."""
    cert = x509.load_pem_x509_certificate(trustme.CA().issue_cert(*names).cert_chain_pems[0].bytes())
    problem = names_problem(cert, server_name)
    assert (problem is None) == named
    if problem:
        assert f"does not name this host's ServerName {server_name} (it names {', '.join(names)})" in problem


def test_the_name_warning_is_said_at_the_hosts_certificate_line(root: Path) -> None:
    config = load(HELLO + "Listen 8443\n<VirtualHost *:8443>\n    ServerName c.test\n    SSLEngine on\n"
                  "    SSLCertificateFile a.test.pem\n    SSLCertificateKeyFile a.test.key\n</VirtualHost>\n")
    line = HELLO.count("\n") + 5
    assert any(w.startswith(f"server.conf:{line}: the certificate does not name this host's ServerName c.test")
               for w in tls_contexts(config).warnings)
