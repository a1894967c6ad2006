"""mod_ssl's directives (Apache 2.4's meaning): what each does to the read state, and the rows
the directive table (directives.py) takes them from. Server-level values are stored as
`ssl_*` attributes of the server's scope; the reader (conffile.py) makes them a
config.TLSSettings, a <VirtualHost>'s over the main server's. SSLOptions is per directory, as
in Apache: its StdEnvVars lands in config.LocationConfig.ssl_std_env_vars.

Directives that Debian's stock ssl.conf and default-ssl.conf carry, and the others Apache
sites use, are accepted with what they do here, noted as having no effect (with the reason),
or refused where only one value is true here (SSLVerifyClient none, SSLCompression off).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from .confstate import Line, ReadState, Scope
from .convert import count, on_off

_Apply = Callable[[ReadState, Scope, list[str], Line], None]

# SSLProtocol's words (Apache 2.4), by lower-case name; 'all' is every one of them.
PROTOCOLS = {name.lower(): name for name in ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")}
SERVED_PROTOCOLS = ("TLSv1.2", "TLSv1.3")  # what a HostContext may speak: the others are left off
# SSLOptions' words (Apache 2.4) and what each does here.
OPTION_EFFECTS = {
    "StdEnvVars": "",  # applied: guests get the SSL_* variables
    "ExportCertData": "SSL_SERVER_CERT is not given to guests, and there is no client certificate",
    "FakeBasicAuth": "no client certificates are asked for (SSLVerifyClient none), so there is no DN to log in with",
    "StrictRequire": "SSLRequire and SSLRequireSSL are not taken here, so there is nothing to make strict",
    "OptRenegotiate": "the server never renegotiates (per-directory TLS settings are not taken)",
    "LegacyDNStringFormat": "",  # applied at server level: SSL_SERVER_*_DN in the old form
}
_OPTION_NAMES = {name.lower(): name for name in OPTION_EFFECTS}


def _server_set(attr: str, convert: Callable[[str], object]) -> _Apply:
    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        scope.set(attr, convert(*args), line)

    return apply


def _engine(arg: str) -> bool:
    """SSLEngine on|off; 'optional' (RFC 2817's upgrade to TLS on a plain connection) is not
    supported, as no client in use speaks it."""
    if arg.lower() == "optional":
        raise ValueError("'optional' (RFC 2817 upgrade) is not supported; use On (a TLS port) or Off")
    return on_off(arg)


def _certificate(attr: str, directive: str) -> _Apply:
    """An existing file, from ServerRoot. One certificate per server: Apache takes an RSA and an
    ECDSA one side by side, Python's ssl one chain per context."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        if attr in scope.values:
            raise ValueError(
                f"a second {directive} for this server (the first at {scope.sources[attr]}): prefork-wasm serves "
                f"one certificate per host (Apache also takes an RSA and an ECDSA one); keep one {directive}"
            )
        scope.set(attr, reader.existing(args[0], "file"), line)

    return apply


def _chain(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    reader.note(line, "SSLCertificateChainFile is obsolete since Apache 2.4.8 (put the chain in SSLCertificateFile); "
                      "it is still read: its certificates follow the leaf")
    scope.set("ssl_chain_file", reader.existing(args[0], "file"), line)


def parse_protocols(args: list[str]) -> tuple[frozenset[str], list[str]]:
    """Apache's SSLProtocol: +PROTO adds, -PROTO removes, a word without a sign sets the list to
    it alone (Apache warns: AH02532); 'all' is every protocol. Returns the protocols asked for
    and warnings. The caller leaves off what is below TLS 1.2."""
    chosen: set[str] = set()
    warnings = []
    for word in args:
        sign = word[0] if word[:1] in ("+", "-") else ""
        name = word[len(sign):].lower()
        if name == "sslv2":  # Apache 2.4 skips '-SSLv2' and refuses the rest
            if sign != "-":
                raise ValueError("SSLv2 is no longer supported")
            continue
        if name == "all":
            names = set(PROTOCOLS.values())
        elif name in PROTOCOLS:
            names = {PROTOCOLS[name]}
        else:
            raise ValueError(f"unknown protocol {word!r}; expected [+|-]all, SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3")
        if sign == "-":
            chosen -= names
        elif sign == "+":
            chosen |= names
        else:
            if chosen:
                warnings.append(f"protocol {word!r} overrides the ones before it (AH02532: is a + or - missing?)")
            chosen = names
    return frozenset(chosen), warnings


def _protocol(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """Below TLS 1.2 is left off with a warning naming what was asked for ('all' means TLS 1.2
    and 1.3 here, without one); nothing left is an error."""
    chosen, warnings = parse_protocols(args)
    for warning in warnings:
        reader.warn(line, f"SSLProtocol: {warning}")
    served = frozenset(chosen & set(SERVED_PROTOCOLS))
    if not served:
        raise ValueError(
            f"'{' '.join(args)}' leaves no protocol this server speaks; it speaks TLSv1.2 and TLSv1.3 only "
            f"(write e.g. 'SSLProtocol -all +TLSv1.2 +TLSv1.3')"
        )
    asked = (arg.lstrip("+").lower() for arg in args if arg[:1] != "-")
    named = {PROTOCOLS[word] for word in asked if word in PROTOCOLS}
    old = [name for name in PROTOCOLS.values() if name in named & chosen - served]
    if old:
        reader.warn(line, f"SSLProtocol: {', '.join(old)} left off: this server speaks TLSv1.2 and TLSv1.3 only")
    scope.set("ssl_protocols", served, line)


def weak_suites(spec: str) -> list[str]:
    """The TLS 1.2 suites `spec` selects that are not forward secret AEAD ones (what Mozilla's
    intermediate profile and scanners rate weak); ValueError when OpenSSL selects none at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(spec)
    except ssl.SSLError:
        raise ValueError(
            f"OpenSSL selects no cipher from {spec!r}; give an OpenSSL cipher list such as "
            f"ECDHE+AESGCM:ECDHE+CHACHA20 (see `openssl ciphers -v 'LIST'`)"
        ) from None
    return [
        suite["name"] for suite in context.get_ciphers()
        if suite["protocol"] != "TLSv1.3" and (suite["kea"] not in ("kx-ecdhe", "kx-dhe") or not suite["aead"])
    ]


def _cipher_suite(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """SSLCipherSuite [SSL|TLSv1.3] SPEC (the protocol argument as Apache 2.4.37 takes it). TLS
    1.3's suites cannot be chosen through Python's ssl: accepted, with a warning, and OpenSSL's
    defaults (all forward secret AEAD suites) are used."""
    protocol, spec = ("SSL", args[0]) if len(args) == 1 else args
    if protocol.lower() == "tlsv1.3":
        reader.warn(line, f"SSLCipherSuite TLSv1.3 {spec}: not applied (Python's ssl cannot set TLS 1.3 suites); "
                          f"OpenSSL's default TLS 1.3 suites are used")
        scope.set("ssl_tls13_cipher_suite", spec, line)
        return
    if protocol.upper() != "SSL":
        raise ValueError(f"expected SSL or TLSv1.3 before the cipher list, got {protocol!r}")
    weak = weak_suites(spec)
    if weak:
        reader.warn(line, f"SSLCipherSuite {spec}: allows {len(weak)} suites without forward secrecy or AEAD "
                          f"({', '.join(weak[:3])}{', ...' if len(weak) > 3 else ''}); leave SSLCipherSuite out "
                          f"for Mozilla's intermediate list")
    scope.set("ssl_cipher_suite", spec, line)


def _options(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """SSLOptions [+|-]OPTION ...: a word with a sign changes what is inherited, one without sets
    the options to it alone (Apache's rule). StdEnvVars is a per-request setting;
    LegacyDNStringFormat changes the host's SSL_SERVER_*_DN (at server or <VirtualHost> level);
    the others are noted with why they change nothing here."""
    std: bool | None = None
    legacy: bool | None = None
    for word in args:
        sign = word[0] if word[:1] in ("+", "-") else ""
        name = _OPTION_NAMES.get(word[len(sign):].lower())
        if name is None:
            raise ValueError(f"unknown option {word!r}; expected [+|-] and one of {', '.join(OPTION_EFFECTS)}")
        if not sign:  # sets the options to this one alone
            std, legacy = name == "StdEnvVars", name == "LegacyDNStringFormat"
        elif name == "StdEnvVars":
            std = sign == "+"
        elif name == "LegacyDNStringFormat":
            legacy = sign == "+"
        if OPTION_EFFECTS[name] and sign != "-":
            reader.note(line, f"SSLOptions {name}: no effect here: {OPTION_EFFECTS[name]}")
    if std is not None:
        scope.set("ssl_std_env_vars", std, line)
    if legacy is not None:
        if reader.location() is not None:
            reader.note(line, "SSLOptions LegacyDNStringFormat: applies per host here (give it at server level or "
                              "in the <VirtualHost>); no effect in this section")
        else:
            reader.context().server.set("ssl_legacy_dn", legacy, line)


def _ignored(reason: str, *, only: str | None = None, warn: bool = False) -> _Apply:
    """An Apache directive that changes nothing here: noted with why (a warning where the user
    would expect an effect); `only` is the one value that is true here."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        if only is not None and args[0].lower() != only.lower():
            raise ValueError(f"only '{only}' is supported: {reason}")
        directive = line.text.split()[0]
        (reader.warn if warn else reader.note)(line, f"{directive}: no effect: {reason}")

    return apply


def _pass_phrase_dialog(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    kind = args[0].lower()
    if kind != "builtin" and not kind.startswith(("exec:", "|")):
        raise ValueError(f"expected builtin, exec:/path/to/program or |/path/to/program, got {args[0]!r}")
    reader.note(line, "SSLPassPhraseDialog: no effect: keys are read without a pass phrase; an encrypted key is "
                      "refused at start with the command that decrypts it")


def _verify_depth(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    count(0)(args[0])
    reader.note(line, "SSLVerifyDepth: no effect: client certificates are not asked for (SSLVerifyClient none)")


_NO_CLIENT_CERTS = "client certificates are not asked for here (SSLVerifyClient none), so no CA or CRL is read"
_NO_PROXY = "prefork-wasm has no proxy (mod_proxy), so it makes no TLS connections of its own"
_NO_STAPLING = "OCSP stapling is not supported (Python's ssl has no server-side OCSP)"

# (name, usage, apply, (min args, max args), where): 'server' (server config only), 'vhost'
# (server config and <VirtualHost>) or 'dir' (also <Location>, <Directory>, <Files>).
ROWS: tuple[tuple[str, str, _Apply, tuple[int, int | None], str], ...] = (
    ("SSLEngine", "On|Off", _server_set("ssl_engine", _engine), (1, 1), "vhost"),
    ("SSLCertificateFile", "FILE.pem", _certificate("ssl_certificate_file", "SSLCertificateFile"), (1, 1), "vhost"),
    ("SSLCertificateKeyFile", "FILE.key", _certificate("ssl_key_file", "SSLCertificateKeyFile"), (1, 1), "vhost"),
    ("SSLCertificateChainFile", "FILE.pem", _chain, (1, 1), "vhost"),
    ("SSLProtocol", "[+|-]PROTOCOL ...", _protocol, (1, None), "vhost"),
    ("SSLCipherSuite", "[SSL|TLSv1.3] CIPHER-SPEC", _cipher_suite, (1, 2), "vhost"),
    ("SSLHonorCipherOrder", "On|Off", _server_set("ssl_honor_cipher_order", on_off), (1, 1), "vhost"),
    ("SSLSessionTickets", "On|Off", _server_set("ssl_session_tickets", on_off), (1, 1), "vhost"),
    ("SSLStrictSNIVHostCheck", "On|Off", _server_set("ssl_strict_sni", on_off), (1, 1), "vhost"),
    ("SSLCompression", "Off", _ignored("TLS compression is always off (CRIME)", only="off"), (1, 1), "vhost"),
    ("SSLOptions", "[+|-]OPTION ...", _options, (1, None), "dir"),
    ("SSLRandomSeed", "startup|connect SOURCE [BYTES]",
     _ignored("OpenSSL seeds itself from the operating system"), (2, 3), "server"),
    ("SSLPassPhraseDialog", "builtin|exec:PROGRAM", _pass_phrase_dialog, (1, 1), "server"),
    ("SSLSessionCache", "none|shmcb:PATH[(SIZE)]|...",
     _ignored("each worker keeps OpenSSL's own session cache; session tickets resume across workers"),
     (1, 1), "server"),
    ("SSLSessionCacheTimeout", "SECONDS", _ignored("sessions last OpenSSL's default (300 s)"), (1, 1), "vhost"),
    ("SSLSessionTicketKeyFile", "FILE",
     _ignored("ticket keys are made at random by each generation (a restart starts new ones)", warn=True),
     (1, 1), "vhost"),
    ("SSLVerifyClient", "none", _ignored("client certificates are not supported", only="none"), (1, 1), "vhost"),
    ("SSLVerifyDepth", "NUMBER", _verify_depth, (1, 1), "vhost"),
    *((name, "FILE-OR-DIRECTORY", _ignored(_NO_CLIENT_CERTS), (1, 1), "vhost") for name in (
        "SSLCACertificateFile", "SSLCACertificatePath", "SSLCARevocationFile", "SSLCARevocationPath",
        "SSLCADNRequestFile", "SSLCADNRequestPath",
    )),
    *((name, "VALUE ...", _ignored(_NO_CLIENT_CERTS), (1, None), "vhost") for name in (
        "SSLCARevocationCheck", "SSLOCSPEnable", "SSLOCSPDefaultResponder", "SSLOCSPOverrideResponder",
        "SSLOCSPResponderTimeout", "SSLOCSPResponseMaxAge", "SSLOCSPResponseTimeSkew", "SSLOCSPUseRequestNonce",
        "SSLOCSPNoVerify", "SSLOCSPProxyURL", "SSLOCSPResponderCertificateFile",
    )),
    ("SSLUseStapling", "Off", _ignored(_NO_STAPLING, only="off"), (1, 1), "vhost"),
    ("SSLStaplingCache", "TYPE", _ignored(_NO_STAPLING), (1, 1), "server"),
    *((name, "VALUE", _ignored(_NO_STAPLING), (1, 1), "vhost") for name in (
        "SSLStaplingResponderTimeout", "SSLStaplingReturnResponderErrors", "SSLStaplingStandardCacheTimeout",
        "SSLStaplingErrorCacheTimeout", "SSLStaplingFakeTryLater", "SSLStaplingForceURL",
        "SSLStaplingResponseMaxAge", "SSLStaplingResponseTimeSkew",
    )),
    ("SSLProxyEngine", "Off", _ignored(_NO_PROXY, only="off"), (1, 1), "vhost"),
    *((name, "VALUE ...", _ignored(_NO_PROXY), (1, None), "vhost") for name in (
        "SSLProxyVerify", "SSLProxyVerifyDepth", "SSLProxyCheckPeerCN", "SSLProxyCheckPeerName",
        "SSLProxyCheckPeerExpire", "SSLProxyProtocol", "SSLProxyCipherSuite", "SSLProxyCACertificateFile",
        "SSLProxyCACertificatePath", "SSLProxyCARevocationFile", "SSLProxyCARevocationPath",
        "SSLProxyCARevocationCheck", "SSLProxyMachineCertificateFile", "SSLProxyMachineCertificatePath",
        "SSLProxyMachineCertificateChainFile",
    )),
    ("SSLOpenSSLConfCmd", "COMMAND VALUE",
     _ignored("Python's ssl has no SSL_CONF commands; use SSLProtocol and SSLCipherSuite", warn=True),
     (2, 2), "vhost"),
    ("SSLInsecureRenegotiation", "Off",
     _ignored("the server never renegotiates insecurely", only="off"), (1, 1), "vhost"),
    ("SSLRenegBufferSize", "BYTES", _ignored("the server never renegotiates"), (1, 1), "dir"),
    ("SSLFIPS", "Off", _ignored("FIPS mode is OpenSSL's own configuration", only="off"), (1, 1), "server"),
    ("SSLCryptoDevice", "builtin", _ignored("OpenSSL's built-in engine is used", only="builtin"), (1, 1), "server"),
)
