"""A small certificate authority for the broker and the agents (``cloud-controller tls``).

One CA per fleet, kept on the controller host (``[tls] dir`` of controller.toml, default
``tls/`` beside the config): ``ca.crt`` is given to every agent and to the broker, ``ca.key``
never leaves the directory. ``issue`` signs a server certificate for the broker (subject
alternative names = the host names or addresses agents dial) or a client certificate for a
node (common name = node id, for mutual TLS). Keys are ECDSA P-256 and written with mode
0600 before any byte of them is; re-issuing a name replaces its pair, which is how a
certificate is rotated before it expires (docs/operations.md).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertInfo",
    "TlsError",
    "describe",
    "init_ca",
    "issue",
    "write_secret",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


class TlsError(Exception):
    """A CA or certificate operation that cannot be done as asked (message says why)."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What an operator needs to know about a certificate file to plan its rotation."""

    path: Path
    subject: str
    not_after: datetime
    hosts: tuple[str, ...]

    def days_left(self, now: datetime) -> int:
        return (self.not_after - now).days


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (replacing any file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Continuum"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def init_ca(directory: Path, *, now: datetime, days: int = 3650, force: bool = False) -> CertInfo:
    """Create ``ca.crt`` and ``ca.key`` in ``directory``; refuse to replace them unless
    ``force`` (every certificate it signed would stop being trusted with the new CA)."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if (cert_path.exists() or key_path.exists()) and not force:
        raise TlsError(
            f"a CA already exists in {directory}; --force replaces it (and every "
            "certificate it signed must then be issued again)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Continuum CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return describe(cert_path)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError:
        raise TlsError(f"no CA in {ca_dir}: run `cloud-controller tls init` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{ca_dir / CA_KEY} is not an EC key written by `tls init`")
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def issue(
    ca_dir: Path,
    name: str,
    *,
    out_dir: Path,
    server: bool,
    hosts: Sequence[str] = (),
    now: datetime,
    days: int = 397,
) -> tuple[Path, Path]:
    """Sign a certificate for ``name``; write ``NAME.crt``, ``NAME.key`` (0600) and a copy of
    ``ca.crt`` into ``out_dir``; return the certificate and key paths.

    ``server``: a broker certificate valid for ``hosts`` (default: ``name``), else a client
    certificate whose common name is the node id ``name``.
    """
    if not name or "/" in name or name.startswith("."):
        raise TlsError(f"{name!r} cannot be a certificate name (it names the files)")
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(_san(list(hosts) or [name]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    write_secret(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    if (out_dir / CA_CERT).resolve() != (ca_dir / CA_CERT).resolve():
        _write_public(out_dir / CA_CERT, (ca_dir / CA_CERT).read_bytes())
    return cert_path, key_path


def describe(path: Path) -> CertInfo:
    """Subject, expiry and host names of a PEM certificate file."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        hosts = ()
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(common[0].value) if common else cert.subject.rfc4514_string()
    return CertInfo(path=path, subject=subject, not_after=cert.not_valid_after_utc, hosts=hosts)
