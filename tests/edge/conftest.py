"""TLS material for edge tests: a kubegate CA, an edge server certificate, client certs."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.ca import CertificateAuthority, IssuedCertificate


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority
    server: IssuedCertificate

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.crt"

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (self.dir / "server.crt").write_bytes(self.server.cert_pem)
        (self.dir / "server.key").write_bytes(self.server.key_pem)
        ctx.load_cert_chain(self.dir / "server.crt", self.dir / "server.key")
        ctx.load_verify_locations(self.ca_path)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_context(self, cert: IssuedCertificate | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        if cert is not None:
            path = self.dir / f"client-{cert.serial}"
            path.with_suffix(".crt").write_bytes(cert.cert_pem)
            path.with_suffix(".key").write_bytes(cert.key_pem)
            ctx.load_cert_chain(path.with_suffix(".crt"), path.with_suffix(".key"))
        return ctx

    def client_cert(
        self, user: str, ttl: dt.timedelta = dt.timedelta(hours=1)
    ) -> IssuedCertificate:
        return self.ca.issue_client(user, ttl)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = Path(tmp_path_factory.mktemp("pki"))
    ca = CertificateAuthority.load_or_create(d)
    return Pki(dir=d, ca=ca, server=ca.issue_server(["localhost", "127.0.0.1"]))
