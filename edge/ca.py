"""kubegate's own certificate authority: it signs the edge's server certificate and the client
certificates inside downloaded kubeconfigs (CN = user id, the only identity the edge trusts).

ECDSA P-256 keys: small, fast to make, and accepted by kubectl, helm and every TLS stack we
meet. The CA key never leaves the control plane's data directory (mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.errors import EdgeError

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)
CLOCK_SKEW = dt.timedelta(minutes=1)


class CertificateError(EdgeError):
    """A certificate could not be issued or read."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly signed certificate with its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    issued_at: dt.datetime


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class CertificateAuthority:
    """Loads or creates the CA in a directory (`ca.crt`, `ca.key`) and signs certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "kubegate CA") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            except ValueError as exc:
                raise CertificateError(f"unreadable CA in {directory}: {exc}") from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CertificateError(f"CA key in {directory} is not an EC key")
            return cls(cert, key)
        ca = cls.create(name)
        cert_path.write_bytes(ca.cert_pem)
        _write_private(key_path, _key_pem(ca.key))
        return ca

    @classmethod
    def create(cls, name: str = "kubegate CA") -> CertificateAuthority:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def _sign(
        self,
        common_name: str,
        ttl: dt.timedelta,
        usage: ExtendedKeyUsageOID,
        sans: list[x509.GeneralName] | None = None,
        now: dt.datetime | None = None,
        organizations: tuple[str, ...] = (),
    ) -> IssuedCertificate:
        if not common_name:
            raise CertificateError("a certificate needs a common name")
        key = _new_key()
        now = now or dt.datetime.now(dt.UTC)
        not_before = now - CLOCK_SKEW
        not_after = now + ttl
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            serial=serial_hex(cert),
            not_before=not_before,
            not_after=not_after,
            fingerprint=fingerprint(cert),
            issued_at=now,
        )

    def issue_client(
        self,
        user: str,
        ttl: dt.timedelta,
        now: dt.datetime | None = None,
        uris: tuple[str, ...] = (),
    ) -> IssuedCertificate:
        """A client certificate for `user` (CN); groups come from policy, never the cert.
        `uris` become URI subject alternative names (the browser shell's session marker)."""
        if ttl <= dt.timedelta(0):
            raise CertificateError("certificate lifetime must be positive")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        return self._sign(user, ttl, ExtendedKeyUsageOID.CLIENT_AUTH, sans, now=now)

    def issue_server(
        self, hostnames: list[str], ttl: dt.timedelta = SERVER_VALIDITY
    ) -> IssuedCertificate:
        """A server certificate valid for DNS names and IP addresses in `hostnames`."""
        sans: list[x509.GeneralName] = []
        for name in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        return self._sign(hostnames[0], ttl, ExtendedKeyUsageOID.SERVER_AUTH, sans)


def write_server_files(ca: CertificateAuthority, directory: Path, hostnames: list[str]) -> Path:
    """Issue the edge's server certificate into `directory` (`edge.crt`, `edge.key`)."""
    issued = ca.issue_server(hostnames)
    (directory / "edge.crt").write_bytes(issued.cert_pem)
    _write_private(directory / "edge.key", issued.key_pem)
    return directory / "edge.crt"
