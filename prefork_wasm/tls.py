"""TLS as mod_ssl configures it: the master makes one context per host that has `SSLEngine on`
(its certificate and key read before any worker drops privileges, each generation anew: a
graceful restart loads renewed certificates), and workers inherit them through fork.

A TLS port's listener gets its default host's context (Apache's default name-based host for
the address), whose SNI callback switches the handshake to the context of the host the client
named (`VirtualHost.answers`, as the router chooses by Host); an unknown name or none keeps the
default host's certificate, as Apache does.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from .config import Listen, ServerConfig, TLSSettings, VirtualHost, canonical_name
from .router import select_host
from .tlscheck import CertificateError, Materials, certificate_warnings, located, names_problem, read_materials

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class HostContext(ssl.SSLContext):
    """The TLS context of one virtual host (or the main server). `server_vars` are its
    certificate's mod_ssl variables (SSL_SERVER_S_DN, ...), read once when it is made, for the
    guests of requests whose handshake it served; `settings` and `host` say whose it is (the
    router's Host-versus-SNI rule compares them)."""

    server_vars: dict[str, str]
    settings: TLSSettings
    host: VirtualHost | None  # None: the main server


def host_context(settings: TLSSettings, materials: Materials, host: VirtualHost | None) -> HostContext:
    """A server context with the host's protocols (TLS 1.2 and 1.3 at most), its TLS 1.2 cipher
    suites, compression and renegotiation off, tickets and server cipher order as set, and its chain and key."""
    context = HostContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[name] for name in settings.protocols)
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    context.options |= ssl.OP_NO_COMPRESSION
    # mod_ssl refuses a client's renegotiation (AH02042); here it would also have a held
    # connection's read wait to write, which the event loop does not wait for.
    context.options |= ssl.OP_NO_RENEGOTIATION
    if not settings.session_tickets:
        context.options |= ssl.OP_NO_TICKET
    if settings.honor_cipher_order:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:  # Python sets it for every context; SSLHonorCipherOrder's default is off, the client's order
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(settings.cipher_suite)
    # From memory: the files were read once (read_materials), and what was checked is what serves.
    fd = os.memfd_create("tls-chain", os.MFD_CLOEXEC)
    try:
        os.write(fd, materials.chain_pem.rstrip(b"\n") + b"\n" + materials.key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    except ssl.SSLError as e:  # e.g. a key too small for OpenSSL's security level
        raise CertificateError(located(
            settings.sources.get("certificate_file", ""),
            f"SSLCertificateFile: OpenSSL refuses {settings.certificate_file} or its key: {e.reason or e}; "
            f"use an RSA key of 2048 bits or more, or an ECDSA key",
        )) from None
    finally:
        os.close(fd)
    context.server_vars = server_vars(materials.chain[0], settings.legacy_dn)
    context.settings, context.host = settings, host
    return context


@dataclass
class Contexts:
    """A generation's TLS contexts: each TLS listener's default context, and the warnings about
    its certificates (each generation logs them, -t prints them)."""

    by_listen: dict[Listen, HostContext] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def listener_contexts(config: ServerConfig, now: datetime.datetime | None = None) -> Contexts:
    """Every TLS listener's context (its default host's, with the SNI callback over the hosts on
    its address). CertificateError (FILE:LINE) when a certificate or key cannot be served."""
    now = now or datetime.datetime.now(datetime.UTC)
    made = Contexts()
    read: dict[tuple[Any, ...], Materials] = {}

    def materials(settings: TLSSettings) -> Materials:
        key = (settings.certificate_file, settings.key_file, settings.chain_file)
        if key not in read:
            read[key] = read_materials(settings)
            made.warnings += certificate_warnings(settings, read[key], now)
        return read[key]

    def named(settings: TLSSettings, name: str, where: str) -> None:
        problem = names_problem(materials(settings).chain[0], name) if name else None
        if problem and located(where, problem) not in made.warnings:
            made.warnings.append(located(where, problem))

    by_host: dict[int, HostContext] = {}
    for listen in config.listens:
        settings = config.tls_on(listen)
        if settings is None:
            continue
        hosts = config.hosts_on(listen)
        for host in hosts:
            named(host.tls, host.server_name, host.tls.sources.get("certificate_file", host.source))
        if not hosts:
            named(settings, canonical_name(config.server_name or ""), settings.sources.get("certificate_file", ""))
        default = host_context(settings, materials(settings), hosts[0] if hosts else None)
        if len(hosts) > 1:  # name-based hosts: SNI chooses among their contexts
            for host in hosts:
                if id(host) not in by_host:
                    by_host[id(host)] = host_context(host.tls, materials(host.tls), host)
            ask_ip = not listen.host and any(address.host for host in hosts for address in host.addresses)
            default.sni_callback = sni_callback(hosts, by_host, listen, ask_ip)
        made.by_listen[listen] = default
    return made


def sni_callback(
    hosts: list[VirtualHost], contexts: dict[int, HostContext], listen: Listen, ask_ip: bool
) -> Callable[[Any, str | None, ssl.SSLContext], None]:
    """The callback of a listener's default context: the host the client named is the one the
    router would choose for that Host on this address (router.select_host), and its context
    serves the handshake. `ask_ip`: the listener is on all addresses while hosts name one, so
    the connection's local address is asked."""

    def callback(sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        name = (server_name or "").rstrip(".").lower()
        if not name:
            return
        ip = listen.host
        if ask_ip and hasattr(sslobj, "getsockname"):
            try:
                ip = sslobj.getsockname()[0]
            except OSError:
                return
        host = select_host(hosts, ip, listen.port, name)
        chosen = contexts.get(id(host))
        if chosen is not None and getattr(context, "host", None) is not host:
            sslobj.context = chosen

    return callback


# mod_ssl's names for a DN's parts (SSL_SERVER_S_DN_CN, ...), and OpenSSL's short names for the
# legacy one-line form ('/C=DE/O=Example/CN=www.example.com').
_DN_PARTS = {
    NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
    NameOID.TITLE: "T", NameOID.INITIALS: "I", NameOID.GIVEN_NAME: "G", NameOID.SURNAME: "S",
    NameOID.DN_QUALIFIER: "D", NameOID.USER_ID: "UID", NameOID.EMAIL_ADDRESS: "Email",
}
_KEY_NAMES = {"ed25519": "ED25519", "ed448": "ED448"}  # OpenSSL's long names where cryptography's differ


def distinguished_name(name: x509.Name, legacy: bool) -> str:
    """A DN as mod_ssl gives it: RFC 2253 (most specific part first), or with
    +LegacyDNStringFormat OpenSSL's old one-line form."""
    if not legacy:
        return name.rfc4514_string()
    parts = []
    for attribute in name:
        short = "emailAddress" if attribute.oid == NameOID.EMAIL_ADDRESS else attribute.rfc4514_attribute_name
        parts.append(f"/{short}={attribute.value!s}")
    return "".join(parts)


def asn1_time(moment: datetime.datetime) -> str:
    """OpenSSL's ASN1_TIME_print form, as mod_ssl's SSL_SERVER_V_START: 'Dec  6 22:00:00 2026 GMT'."""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def server_vars(cert: x509.Certificate, legacy_dn: bool = False) -> dict[str, str]:
    """mod_ssl's SSL_SERVER_* variables of a certificate (what StdEnvVars gives guests)."""
    serial = f"{cert.serial_number:X}"
    found = {
        "SSL_SERVER_M_VERSION": str(cert.version.value + 1),
        "SSL_SERVER_M_SERIAL": serial.zfill(len(serial) + len(serial) % 2),
        "SSL_SERVER_S_DN": distinguished_name(cert.subject, legacy_dn),
        "SSL_SERVER_I_DN": distinguished_name(cert.issuer, legacy_dn),
        "SSL_SERVER_V_START": asn1_time(cert.not_valid_before_utc),
        "SSL_SERVER_V_END": asn1_time(cert.not_valid_after_utc),
        "SSL_SERVER_A_SIG": _oid_name(cert.signature_algorithm_oid),
        "SSL_SERVER_A_KEY": _oid_name(cert.public_key_algorithm_oid),
    }
    for prefix, name in (("SSL_SERVER_S_DN", cert.subject), ("SSL_SERVER_I_DN", cert.issuer)):
        for oid, part in _DN_PARTS.items():
            values = name.get_attributes_for_oid(oid)
            if values:
                found[f"{prefix}_{part}"] = str(values[0].value)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    for index, dns in enumerate(names.get_values_for_type(x509.DNSName)):
        found[f"SSL_SERVER_SAN_DNS_{index}"] = dns
    return found


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = oid._name
    return "UNKNOWN" if name == "Unknown OID" else _KEY_NAMES.get(name, name)
