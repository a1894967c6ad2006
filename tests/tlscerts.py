"""Certificates made at test time: trustme's for the usual chains, cryptography's builder for the
ones trustme does not make (expiring soon or expired, self-signed)."""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_leaf(
    ca: trustme.CA, folder: Path, name: str, *, chain: bool = False, key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> tuple[Path, Path]:
    """A certificate for `name` issued by `ca` and its key, as two PEM files (the certificate file
    holding the chain up to the CA when `chain`), each readable by its owner only."""
    leaf = ca.issue_cert(name, key_type=key_type)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
    cert.write_bytes(b"".join(pem.bytes() for pem in pems) + (ca.cert_pem.bytes() if chain else b""))
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    return cert, key


def self_signed(folder: Path, name: str, not_after: datetime.datetime) -> tuple[Path, Path]:
    """A self-signed certificate for `name` valid until `not_after` (in the past for an expired
    one), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = min(not_after, datetime.datetime.now(datetime.UTC)) - datetime.timedelta(days=365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(0x0A1B)
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path
