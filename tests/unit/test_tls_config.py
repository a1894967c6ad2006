"""mod_ssl's directives, each read as Apache 2.4's mod_ssl documentation says
(https://httpd.apache.org/docs/2.4/mod/mod_ssl.html), one table per directive, each row citing
the documented behaviour it checks; and the config checks a TLS port needs (a certificate for
each SSLEngine on host, one answer per address:port on whether it speaks TLS)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trustme

from prefork_wasm.config import DEFAULT_CIPHER_SUITE, ConfigError, Listen, ServerConfig, TLSSettings
from test_config import HELLO, fails, load, location, server_root  # noqa: F401 (autouse fixture "root")
from tlscerts import write_leaf

DEBIAN = Path(__file__).parent.parent / "conf" / "debian12-apache2"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(autouse=True)
def certificates(root: Path, ca: trustme.CA) -> None:
    write_leaf(ca, root, "a.test")
    write_leaf(ca, root, "b.test")


def vhost(*lines: str, name: str = "a.test", port: int = 8443) -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return f"<VirtualHost *:{port}>\n    ServerName {name}\n{body}</VirtualHost>\n"


TLS_HOST = ("SSLEngine on", "SSLCertificateFile a.test.pem", "SSLCertificateKeyFile a.test.key")


def tls_config(*server: str, host: tuple[str, ...] = TLS_HOST) -> ServerConfig:
    return load(HELLO + "Listen 8443 https\n" + "".join(f"{line}\n" for line in server) + vhost(*host))


def host_tls(*server: str, host: tuple[str, ...] = TLS_HOST) -> TLSSettings:
    return tls_config(*server, host=host).virtual_hosts[0].tls


def test_without_ssl_directives_no_port_speaks_tls_and_the_defaults_are_this_servers() -> None:
    config = load(HELLO)
    assert config.tls == TLSSettings() and config.tls_on(config.listens[0]) is None
    settings = TLSSettings()
    assert settings.protocols == {"TLSv1.2", "TLSv1.3"}  # Apache's default 'all' with TLS 1.0/1.1 left off
    assert (settings.cipher_suite, settings.session_tickets, settings.honor_cipher_order) == (
        DEFAULT_CIPHER_SUITE, True, False,  # SSLSessionTickets on, SSLHonorCipherOrder off: Apache's defaults
    )


def test_a_virtual_host_with_sslengine_on_makes_its_port_speak_tls(root: Path) -> None:
    config = tls_config()
    tls_listen = config.listens[1]
    assert (tls_listen, tls_listen.protocol) == (Listen("", 8443), "https")
    settings = config.tls_on(tls_listen)
    assert settings is not None and settings.certificate_file == root / "a.test.pem"
    assert settings.key_file == root / "a.test.key"
    assert config.tls_on(config.listens[0]) is None  # Listen 8080: the main server, no SSLEngine


def test_server_level_settings_are_inherited_by_a_virtual_host_that_sets_none(root: Path) -> None:
    """mod_ssl merges a virtual host's settings over the main server's: SSLEngine and the
    certificate at server level serve every host that does not set its own."""
    config = load(HELLO.replace("Listen 8080", "Listen 8443") + "\n".join(TLS_HOST) + "\nSSLSessionTickets off\n"
                  + vhost("SSLCertificateFile b.test.pem", "SSLCertificateKeyFile b.test.key", name="b.test"))
    main, host = config.tls, config.virtual_hosts[0].tls
    assert (main.engine, main.certificate_file) == (True, root / "a.test.pem")
    assert (host.engine, host.certificate_file, host.session_tickets) == (True, root / "b.test.pem", False)


@pytest.mark.parametrize(
    "args, protocols, warning, apache_says",
    [
        ("all -SSLv3", {"TLSv1.2", "TLSv1.3"}, None, "Debian's stock line; 'all' is every protocol (here 1.2+)"),
        ("-all +TLSv1.3", {"TLSv1.3"}, None, "-all removes every protocol, +TLSv1.3 adds one"),
        ("TLSv1.2", {"TLSv1.2"}, None, "a protocol without a sign is the list alone"),
        ("TLSv1.2 TLSv1.3", {"TLSv1.3"}, "overrides the ones before it (AH02532", "a word without +/- overrides"),
        ("+TLSv1.1 +TLSv1.2", {"TLSv1.2"}, "TLSv1.1 left off", "asking for TLS 1.1: left off here, with a warning"),
        ("-SSLv2 all", {"TLSv1.2", "TLSv1.3"}, None, "'-SSLv2' is skipped (SSLv2 is gone from Apache 2.4)"),
    ],
)
def test_ssl_protocol(args: str, protocols: set[str], warning: str | None, apache_says: str) -> None:
    config = tls_config(f"SSLProtocol {args}")
    assert config.virtual_hosts[0].tls.protocols == protocols, apache_says
    found = [text for text in config.warnings if "SSLProtocol" in text]
    assert (warning is None and not found) or (warning is not None and warning in found[0]), found


@pytest.mark.parametrize(
    "args, message",
    [
        ("TLSv1", "leaves no protocol this server speaks; it speaks TLSv1.2 and TLSv1.3 only"),
        ("SSLv2", "SSLv2 is no longer supported"),
        ("TLSv9", "unknown protocol 'TLSv9'"),
    ],
)
def test_ssl_protocol_refused(args: str, message: str) -> None:
    error = fails(HELLO + f"SSLProtocol {args}\n")
    assert re.match(r"server\.conf:\d+: SSLProtocol: ", str(error)) and message in str(error)


@pytest.mark.parametrize(
    "line, suite, tls13, warned, apache_says",
    [
        ("SSLCipherSuite HIGH:!aNULL", "HIGH:!aNULL", "", False, "Debian's stock line: an OpenSSL cipher list"),
        ("SSLCipherSuite SSL ECDHE+AESGCM", "ECDHE+AESGCM", "", False, "'SSL' names TLS 1.2 and below (2.4.37)"),
        ("SSLCipherSuite TLSv1.3 TLS_AES_256_GCM_SHA384", DEFAULT_CIPHER_SUITE, "TLS_AES_256_GCM_SHA384", True,
         "'TLSv1.3' names TLS 1.3's suites: not settable from Python, accepted with a warning"),
    ],
)
def test_ssl_cipher_suite(line: str, suite: str, tls13: str, warned: bool, apache_says: str) -> None:
    config = tls_config(line)
    settings = config.virtual_hosts[0].tls
    assert (settings.cipher_suite, settings.tls13_cipher_suite) == (suite, tls13), apache_says
    assert any("not applied" in warning for warning in config.warnings) == warned


@pytest.mark.parametrize(
    "line, message",
    [
        ("SSLCipherSuite NO-SUCH-CIPHER", "OpenSSL selects no cipher from 'NO-SUCH-CIPHER'"),
        ("SSLCipherSuite TLSv1.4 HIGH", "expected SSL or TLSv1.3 before the cipher list"),
        ("SSLEngine optional", "'optional' (RFC 2817 upgrade) is not supported"),
        ("SSLCertificateFile missing.pem", "no such file 'missing.pem' (relative paths are taken from ServerRoot"),
        ("SSLVerifyClient require", "only 'none' is supported: client certificates are not supported"),
        ("SSLCompression on", "only 'off' is supported: TLS compression is always off"),
        ("SSLUseStapling on", "only 'off' is supported: OCSP stapling is not supported"),
        ("SSLInsecureRenegotiation on", "only 'off' is supported"),
        ("SSLOptions +CompatEnvVars", "unknown option '+CompatEnvVars'"),
        ("SSLRequireSSL", "a directive of ssl_module that prefork-wasm does not implement"),
    ],
)
def test_refused_values_name_the_line_and_what_to_do(line: str, message: str) -> None:
    error = str(fails(HELLO + line + "\n"))
    assert error.startswith(f"server.conf:{HELLO.count(chr(10)) + 1}: ") and message in error, error


def test_ssl_directives_of_a_virtual_host_are_refused_inside_a_location() -> None:
    """SSLEngine's context is 'server config, virtual host' (mod_ssl's table)."""
    error = str(fails(HELLO + "<Location /x>\n    SSLEngine on\n</Location>\n"))
    assert "SSLEngine: not allowed inside <Location /x>" in error


@pytest.mark.parametrize(
    "section, path, std",
    [
        ("", "/hello", True),  # server config: every request of the server
        ("<Location /hello>\n    SSLOptions +StdEnvVars\n</Location>\n", "/hello", True),
        ("SSLOptions +StdEnvVars\n<Location /hello>\n    SSLOptions -StdEnvVars\n</Location>\n", "/hello", False),
        ("SSLOptions +StdEnvVars\n<Location /hello>\n    SSLOptions FakeBasicAuth\n</Location>\n", "/hello", False),
        ("SSLOptions +StdEnvVars\n<Location /hello>\n    SSLOptions +FakeBasicAuth\n</Location>\n", "/hello", True),
    ],
)
def test_ssl_options_std_env_vars_merges_per_section(section: str, path: str, std: bool) -> None:
    """SSLOptions: options with + or - are merged with those in force; an option without them
    replaces them all (mod_ssl's SSLOptions: 'the options are not merged')."""
    text = HELLO + (section or "SSLOptions +StdEnvVars\n")
    assert location(load(text), path).ssl_std_env_vars is std


def test_ssl_options_in_a_files_match_section_reach_the_script_it_covers(root: Path) -> None:
    """Debian's default-ssl.conf: <FilesMatch "\\.(?:cgi|shtml|phtml|php)$"> SSLOptions +StdEnvVars."""
    config = load(HELLO + '<FilesMatch "\\.php$">\n    SSLOptions +StdEnvVars\n</FilesMatch>\n')
    (section,) = config.routes.disk
    assert section.settings == {"ssl_std_env_vars": True}
    assert location(config, "/hello").ssl_std_env_vars is False


def test_ssl_options_legacy_dn_string_format_is_a_host_setting() -> None:
    assert host_tls(host=(*TLS_HOST, "SSLOptions +LegacyDNStringFormat")).legacy_dn is True
    config = load(HELLO + "<Location /hello>\n    SSLOptions +LegacyDNStringFormat\n</Location>\n")
    assert config.tls.legacy_dn is False
    assert any("applies per host here" in note for note in config.notes)


def test_the_key_may_stay_in_the_certificate_file(root: Path) -> None:
    """SSLCertificateKeyFile: 'if the private key is combined with the certificate in the
    SSLCertificateFile, this directive need not be used'."""
    settings = host_tls(host=("SSLEngine on", "SSLCertificateFile a.test.pem"))
    assert (settings.certificate_file, settings.key_file) == (root / "a.test.pem", None)


def test_one_certificate_per_host() -> None:
    error = str(fails(HELLO + "SSLCertificateFile a.test.pem\nSSLCertificateFile b.test.pem\n"))
    assert "a second SSLCertificateFile for this server (the first at server.conf:" in error


def test_sslengine_on_without_a_certificate_is_refused_at_its_line() -> None:
    """Apache refuses to start (AH02572: 'Failed to configure at least one certificate and key')."""
    error = str(fails(HELLO + "Listen 8443\n" + vhost("SSLEngine on")))
    assert re.search(r"server\.conf:\d+: SSLEngine: SSLEngine on needs SSLCertificateFile", error), error
    assert "for the <VirtualHost> at server.conf:" in error


def test_hosts_of_one_port_must_agree_on_tls() -> None:
    error = str(fails(HELLO + "Listen 8443\n" + vhost(*TLS_HOST) + vhost(name="b.test")))
    assert "this host has no SSLEngine on, and the <VirtualHost> at server.conf:" in error
    assert error.startswith("server.conf:") and "<VirtualHost>:" in error


def test_listen_https_without_a_tls_host_is_a_warning() -> None:
    """Listen's protocol argument names the port's use; it does not turn TLS on (mod_ssl does)."""
    config = load(HELLO + "Listen 8443 https\n")
    assert any("Listen *:8443 https: no server answering there has SSLEngine on" in w for w in config.warnings)
    assert str(fails(HELLO + "Listen 8443 gopher\n")).endswith("expected the protocol http or https after the "
                                                                 "address, got 'gopher'")


def test_ssl_module_is_provided_for_ifmodule() -> None:
    """Debian's ports.conf: <IfModule ssl_module> Listen 443 </IfModule>."""
    config = load(HELLO + "<IfModule ssl_module>\n    Listen 8443\n</IfModule>\n"
                  "<IfModule mod_ssl.c>\n    Listen 8444\n</IfModule>\n")
    assert [listen.port for listen in config.listens] == [8080, 8443, 8444]


def test_debian_stock_ssl_conf_and_default_ssl_site_are_accepted(root: Path) -> None:
    """Debian 12's mods-available/ssl.conf and sites-available/default-ssl.conf, unchanged but
    for the snakeoil certificate's paths: every SSL* line is taken, noted or warned about."""
    shutil.copy(DEBIAN / "ssl.conf", root / "ssl.conf")
    site = (DEBIAN / "default-ssl.conf").read_text()
    site = site.replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", "a.test.pem")
    site = site.replace("/etc/ssl/private/ssl-cert-snakeoil.key", "a.test.key").replace("*:443", "*:8443")
    (root / "default-ssl.conf").write_text(site)
    (root / "logs").mkdir()
    config = load(
        "Define APACHE_RUN_DIR run\nDefine APACHE_LOG_DIR logs\nListen 8443\nServerName localhost\n"
        "<IfModule ssl_module>\n    Include ssl.conf\n</IfModule>\nInclude default-ssl.conf\n"
    )
    (host,) = config.virtual_hosts
    assert host.tls.engine and host.tls.cipher_suite == "HIGH:!aNULL" and not host.tls.session_tickets
    assert host.tls.protocols == {"TLSv1.2", "TLSv1.3"}
    noted = " ".join(config.notes)
    for directive in ("SSLRandomSeed", "SSLPassPhraseDialog", "SSLSessionCache", "SSLSessionCacheTimeout"):
        assert f"{directive}: no effect" in noted
    (section,) = [s for s in host.routes.disk if s.kind == "FilesMatch"]
    assert section.settings == {"ssl_std_env_vars": True}


def test_a_directive_error_is_a_config_error() -> None:
    assert isinstance(fails(HELLO + "SSLHonorCipherOrder maybe\n"), ConfigError)


def test_a_cipher_list_with_suites_that_are_not_forward_secret_aead_is_a_warning() -> None:
    """Debian's stock 'HIGH:!aNULL' also selects RSA key exchange and CBC suites, which Mozilla's
    intermediate profile (this server's default) and scanners such as sslyze rate weak."""
    config = tls_config("SSLCipherSuite HIGH:!aNULL")
    (warning,) = [w for w in config.warnings if "SSLCipherSuite HIGH:!aNULL: allows" in w]
    assert "suites without forward secrecy or AEAD" in warning and "leave SSLCipherSuite out" in warning
    assert not [w for w in tls_config("SSLCipherSuite ECDHE+AESGCM").warnings if "SSLCipherSuite" in w]
