"""Who is calling: the verified client certificate's CN, serial and validity, nothing else.

The TLS layer has already checked the chain against kubegate's CA and the validity period, so
this only reads the fields. Parsed certificates are cached by their DER bytes: one parse per
certificate, not per request.

Two kinds of certificate come from kubegate's CA. A downloaded kubeconfig's certificate has
only CN = user: the caller comes `via="cli"`. The browser shell's certificate also carries
one URI subject alternative name `kubegate:session:<session id>` (made here, by
`issue_browser_certificate`, and nowhere else): the caller comes `via="browser"`, tied to that
console session, so policy judges the session (ended, idle, expired) and not the certificate.
Users never choose what kubegate's CA signs, so nobody else can put that marker in a
certificate. A certificate with a malformed marker identifies nobody.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from domain.policy.decide import Caller
from edge.ca import CertificateAuthority, CertificateError, IssuedCertificate

SESSION_URI_PREFIX = "kubegate:session:"
"""The marker of a browser-shell certificate: a URI SAN naming the console session."""

BROWSER_CERT_MAX_TTL = dt.timedelta(hours=12)


@dataclass(frozen=True)
class Identity:
    user: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    session_id: str = ""
    """Set only for a browser-shell certificate."""

    @property
    def via(self) -> str:
        return "browser" if self.session_id else "cli"

    def caller(self) -> Caller:
        """The policy caller: the certificate for `cli`, the console session for `browser`."""
        if self.session_id:
            return Caller(
                user=self.user,
                via="browser",
                cert_serial=self.serial,
                cert_not_before=self.not_before,
                session_id=self.session_id,
            )
        return Caller(
            user=self.user, via="cli", cert_serial=self.serial, cert_not_before=self.not_before
        )


def session_uri(session_id: str) -> str:
    return SESSION_URI_PREFIX + quote(session_id, safe="")


class _Malformed(ValueError):
    pass


def _session_of(cert: x509.Certificate) -> str:
    """The session id of a browser-shell certificate, "" for any other; raises on a marker
    that is present but malformed (empty, repeated)."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return ""
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    marked = [u for u in uris if u.startswith(SESSION_URI_PREFIX)]
    if not marked:
        return ""
    if len(marked) > 1:
        raise _Malformed("more than one session marker")
    session_id = unquote(marked[0][len(SESSION_URI_PREFIX) :])
    if not session_id:
        raise _Malformed("empty session marker")
    return session_id


@lru_cache(maxsize=4096)
def _parse(der: bytes) -> Identity | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        session_id = _session_of(cert)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    user = names[0].value
    if not isinstance(user, str) or not user:
        return None
    return Identity(
        user=user,
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        session_id=session_id,
    )


def identity_from_der(der: bytes | None) -> Identity | None:
    """The caller's identity from a verified peer certificate, or None without one."""
    if not der:
        return None
    return _parse(der)


def issue_browser_certificate(
    ca: CertificateAuthority,
    *,
    user: str,
    session_id: str,
    session_expires_at: dt.datetime,
    now: dt.datetime,
    max_ttl: dt.timedelta = BROWSER_CERT_MAX_TTL,
) -> IssuedCertificate:
    """A short-lived client certificate for the browser shell of one console session: CN =
    user, the session marker, valid until the session's absolute expiry (or `max_ttl`,
    whichever comes first). The caller records it as CertificateIssued."""
    if not session_id:
        raise CertificateError("a browser certificate needs a console session id")
    ttl = min(session_expires_at - now, max_ttl)
    if ttl <= dt.timedelta(0):
        raise CertificateError(f"console session {session_id} has already expired")
    return ca.issue_client(user, ttl, now=now, uris=(session_uri(session_id),))
