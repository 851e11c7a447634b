"""Who is calling: the verified client certificate's CN, serial and validity, nothing else.

The TLS layer has already checked the chain against kubegate's CA and the validity period, so
this only reads the fields. Parsed certificates are cached by their DER bytes: one parse per
certificate, not per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    user: str
    serial: str
    not_before: datetime
    not_after: datetime


@lru_cache(maxsize=4096)
def _parse(der: bytes) -> Identity | None:
    try:
        cert = x509.load_der_x509_certificate(der)
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
    )


def identity_from_der(der: bytes | None) -> Identity | None:
    """The caller's identity from a verified peer certificate, or None without one."""
    if not der:
        return None
    return _parse(der)
