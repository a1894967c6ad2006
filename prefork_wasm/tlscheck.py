"""A host's certificate and key as the master reads them (once per generation, before any
worker exists), and what `-t` and a start check about them: errors that stop a generation (a
missing or unreadable file, a file without a certificate, an encrypted key, a key that does not
match its certificate), each at its directive's FILE:LINE, and warnings (a chain that does not
reach a trusted root, a certificate that expires within 30 days, a key file others may read).
"""

from __future__ import annotations

import datetime
import errno
import functools
import os
import ssl
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from .config import TLSSettings

EXPIRY_WARNING = datetime.timedelta(days=30)
_SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, when OpenSSL names none that exists


class CertificateError(Exception):
    """A host's certificate or key cannot be served; the message is located at its directive
    ('FILE:LINE: SSLCertificateKeyFile: ...'), so a start or restart refuses it as a config error."""


def located(source: str, message: str) -> str:
    return f"{source}: {message}" if source else message


@dataclass(frozen=True)
class Materials:
    """What a host serves: its certificate chain (leaf first, SSLCertificateChainFile's after
    SSLCertificateFile's) and its key, as PEM for OpenSSL and parsed for the checks."""

    chain_pem: bytes
    key_pem: bytes
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes


def _read(path: Path, settings: TLSSettings, attr: str, directive: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        fix = "run as a user that may read it (the master reads keys before workers drop privileges)"
        if e.errno != errno.EACCES:
            fix = "fix the path"
        raise CertificateError(located(
            settings.sources.get(attr, ""), f"{directive}: cannot read {path}: {e.strerror}; {fix}"
        )) from None


def read_materials(settings: TLSSettings) -> Materials:
    """The host's certificate chain and key, checked to belong together; CertificateError (at the
    directive's FILE:LINE) when they cannot be served."""
    assert settings.certificate_file is not None
    cert_file = settings.certificate_file
    cert_pem = _read(cert_file, settings, "certificate_file", "SSLCertificateFile")
    chain = _certificates(cert_pem)
    if not chain:
        raise CertificateError(located(
            settings.sources.get("certificate_file", ""),
            f"SSLCertificateFile: {cert_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
            f"convert a DER one with 'openssl x509 -inform der -in FILE -out FILE.pem'",
        ))
    if settings.chain_file is not None:
        chain_pem = _read(settings.chain_file, settings, "chain_file", "SSLCertificateChainFile")
        chain += _certificates(chain_pem)
        cert_pem = cert_pem.rstrip(b"\n") + b"\n" + chain_pem
    key_file = settings.key_file or cert_file
    key_attr, key_directive = ("key_file", "SSLCertificateKeyFile") if settings.key_file else (
        "certificate_file", "SSLCertificateFile"
    )
    key_pem = cert_pem if key_file == cert_file else _read(key_file, settings, key_attr, key_directive)
    key = _private_key(key_pem, key_file, located(settings.sources.get(key_attr, ""), key_directive))
    if key.public_key() != chain[0].public_key():
        raise CertificateError(located(
            settings.sources.get(key_attr, ""),
            f"{key_directive}: the key in {key_file} does not match the certificate in {cert_file} "
            f"(compare 'openssl pkey -in KEY -pubout' with 'openssl x509 -in CERT -noout -pubkey')",
        ))
    return Materials(cert_pem, key_pem, tuple(chain), key)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return []
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return []


def _private_key(pem: bytes, path: Path, where: str) -> PrivateKeyTypes:
    if b"PRIVATE KEY-----" not in pem:
        raise CertificateError(
            f"{where}: no private key in {path}; name the key's file with SSLCertificateKeyFile"
        )
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted: there is no pass phrase dialog here
        raise CertificateError(
            f"{where}: the key in {path} is encrypted (it needs a pass phrase); decrypt it for the server: "
            f"openssl pkey -in {path} -out {path}.plain (then keep that file readable by root only)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(f"{where}: cannot read the key in {path}: {e}") from None


def certificate_warnings(settings: TLSSettings, materials: Materials, now: datetime.datetime) -> list[str]:
    """What -t (and a start, in the error log) warns about a host's certificate and key."""
    where = settings.sources.get("certificate_file", "")
    found = [located(where, text) for text in [*chain_problems(materials.chain), *expiry(materials.chain[0], now)]]
    key_file = settings.key_file or settings.certificate_file
    assert key_file is not None
    readable = others_may_read(key_file)
    if readable:
        found.append(located(settings.sources.get("key_file", where), readable))
    return found


def chain_problems(chain: Sequence[x509.Certificate], roots: frozenset[x509.Name] | None = None) -> list[str]:
    """A chain where each certificate is issued by the next, and the last is self-signed or
    issued by a CA of the system's trust store; else what is missing (clients that lack the
    intermediate refuse the certificate)."""
    roots = trusted_roots() if roots is None else roots
    for cert, issuer in zip(chain, chain[1:], strict=False):
        if cert.issuer != issuer.subject or not _signed_by(cert, issuer):
            return [
                f"the certificate '{cert.subject.rfc4514_string()}' is followed by '{issuer.subject.rfc4514_string()}'"
                f", which did not issue it: put the chain in order, leaf first, each certificate's issuer next"
            ]
    last = chain[-1]
    if last.issuer == last.subject or last.issuer in roots:
        return []
    return [
        f"the chain is incomplete: no certificate of issuer '{last.issuer.rfc4514_string()}' (which issued "
        f"'{last.subject.rfc4514_string()}') follows, and the system's trust store has none; append the "
        f"intermediate certificate to SSLCertificateFile"
    ]


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@functools.cache
def trusted_roots() -> frozenset[x509.Name]:
    """The subjects of the system's trust store (OpenSSL's CA file), read once per process."""
    paths = [ssl.get_default_verify_paths().openssl_cafile, _SYSTEM_BUNDLE]
    for path in paths:
        try:
            pem = Path(path).read_bytes()
        except OSError:
            continue
        with warnings.catch_warnings():  # old roots with a serial RFC 5280 disallows: their names still count
            warnings.simplefilter("ignore")
            return frozenset(cert.subject for cert in _certificates(pem))
    return frozenset()


def expiry(cert: x509.Certificate, now: datetime.datetime) -> list[str]:
    """A warning when the certificate has expired or expires within EXPIRY_WARNING of `now`."""
    end = cert.not_valid_after_utc
    when = f"{end:%Y-%m-%d %H:%M:%S} UTC"
    if end <= now:
        return [f"the certificate '{cert.subject.rfc4514_string()}' expired on {when}: renew it"]
    if end - now <= EXPIRY_WARNING:
        days = (end - now).days
        return [
            f"the certificate '{cert.subject.rfc4514_string()}' expires on {when} (in {days} days): renew it "
            f"and reload (prefork-wasm -k graceful)"
        ]
    return []


def names_problem(cert: x509.Certificate, server_name: str) -> str | None:
    """Apache's AH01909: a warning when the certificate does not name the host's ServerName (its
    DNS subject alternative names, a '*.' one covering one label; else its common name)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        names = [str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    wanted = server_name.lower()
    for name in (name.lower() for name in names):
        if name == wanted or (name.startswith("*.") and wanted.partition(".")[2] == name[2:]):
            return None
    return (
        f"the certificate does not name this host's ServerName {server_name} (it names "
        f"{', '.join(names) or 'nothing'}): clients that check it will refuse the connection (AH01909)"
    )


def others_may_read(path: Path) -> str | None:
    """A warning when users other than the owner and group may read a key file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return f"the key file {path} is readable by every user (mode {stat.S_IMODE(mode):04o}): chmod o-r {path}"
    return None
