"""The simulator's own certificate authority, serving certificate and client certificates.

Keys live in the simulator's directory and are reused on restart, so kubeconfigs written earlier
stay valid. Client certificates follow kube-apiserver's mapping: CN is the user, O the groups.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_make_key(path: Path, rsa_bits: int = 0):
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        if rsa_bits
        else ec.generate_private_key(ec.SECP256R1())
    )
    path.write_bytes(_pem_key(key))
    path.chmod(0o600)
    return key


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: bytes
    key_pem: bytes


class CertificateAuthority:
    """A CA kept in `directory` (ca.crt, ca.key); issues server and client certificates."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert_path = directory / "ca.crt"
        self._key = _load_or_make_key(directory / "ca.key")
        if self.cert_path.exists():
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        else:
            self.cert = self._self_sign()
            self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _self_sign(self) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-sim-ca")])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + 10 * _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    def _issue(
        self, subject: x509.Name, usage: ExtendedKeyUsageOID, sans: list | None
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def issue_server(self, hosts: list[str]) -> IssuedCert:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        return self._issue(subject, ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def issue_client(self, user: str, groups: list[str] | tuple[str, ...] = ()) -> IssuedCert:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        return self._issue(x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH, None)

    def server_context(self, server: IssuedCert) -> ssl.SSLContext:
        """TLS for the API: client certificates are optional and verified against this CA."""
        cert_file = self.directory / "apiserver.crt"
        key_file = self.directory / "apiserver.key"
        cert_file.write_bytes(server.cert_pem + self.cert_pem)
        key_file.write_bytes(server.key_pem)
        key_file.chmod(0o600)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # kube-apiserver (Go) gives kubectl AES-128-GCM on AES hardware (its own first choice,
        # and kubectl's); Python's server order would make it AES-256-GCM. Python cannot
        # reorder TLS 1.3 suites, so the simulator follows the client, which gives kubectl what
        # a real cluster gives it (a Python client such as the relay keeps its AES-256-GCM).
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cadata=self.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def identity_from_cert(der: bytes) -> tuple[str, list[str]]:
    """(user, groups) from a verified client certificate."""
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    user = str(cns[0].value) if cns else ""
    return user, [str(o.value) for o in orgs]


def load_or_make_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """The service-account token signing key (RS256, as kube-apiserver's default)."""
    return _load_or_make_key(path, rsa_bits=2048)
