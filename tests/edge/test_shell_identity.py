"""Browser-shell certificates: issued per console session with kubegate's marker, read back by
the edge as `via="browser"` callers; kubeconfig certificates stay `via="cli"`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509

from domain.control import ControlPlane
from domain.errors import InvalidCommandError
from edge.ca import CertificateAuthority, CertificateError
from edge.identity import (
    SESSION_URI_PREFIX,
    identity_from_der,
    issue_browser_certificate,
    session_uri,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test CA")


def _der(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_browser_certificate_names_the_session(ca: CertificateAuthority) -> None:
    issued = issue_browser_certificate(
        ca,
        user="alice",
        session_id="s-1/odd id",
        session_expires_at=NOW + dt.timedelta(hours=2),
        now=NOW,
    )
    identity = identity_from_der(_der(issued.cert_pem))
    assert identity is not None
    assert (identity.user, identity.via, identity.session_id) == ("alice", "browser", "s-1/odd id")
    caller = identity.caller()
    assert caller.via == "browser" and caller.session_id == "s-1/odd id"
    assert caller.cert_serial == issued.serial
    assert issued.not_after == NOW + dt.timedelta(hours=2)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [session_uri("s-1/odd id")]


def test_kubeconfig_certificate_stays_cli(ca: CertificateAuthority) -> None:
    issued = ca.issue_client("alice", dt.timedelta(hours=1), now=NOW)
    identity = identity_from_der(_der(issued.cert_pem))
    assert identity is not None
    assert identity.via == "cli" and identity.session_id == ""
    caller = identity.caller()
    assert caller.via == "cli" and caller.session_id == ""
    assert caller.cert_not_before == issued.not_before


def test_browser_certificate_never_outlives_the_session(ca: CertificateAuthority) -> None:
    capped = issue_browser_certificate(
        ca,
        user="alice",
        session_id="s-2",
        session_expires_at=NOW + dt.timedelta(days=3),
        now=NOW,
        max_ttl=dt.timedelta(hours=1),
    )
    assert capped.not_after == NOW + dt.timedelta(hours=1)
    with pytest.raises(CertificateError, match="already expired"):
        issue_browser_certificate(
            ca, user="alice", session_id="s-3", session_expires_at=NOW, now=NOW
        )
    with pytest.raises(CertificateError, match="session id"):
        issue_browser_certificate(
            ca, user="alice", session_id="", session_expires_at=NOW + dt.timedelta(1), now=NOW
        )


@pytest.mark.parametrize(
    "uris",
    [(SESSION_URI_PREFIX,), (session_uri("a"), session_uri("b"))],
    ids=["empty-marker", "two-markers"],
)
def test_malformed_marker_identifies_nobody(ca: CertificateAuthority, uris: tuple) -> None:
    issued = ca.issue_client("alice", dt.timedelta(hours=1), now=NOW, uris=uris)
    assert identity_from_der(_der(issued.cert_pem)) is None


def test_other_uris_do_not_make_a_browser_caller(ca: CertificateAuthority) -> None:
    issued = ca.issue_client("alice", dt.timedelta(hours=1), now=NOW, uris=("spiffe://x/y",))
    identity = identity_from_der(_der(issued.cert_pem))
    assert identity is not None and identity.via == "cli"


# --- the control plane records browser certificates only for a live session of the user ---


class Clock:
    now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def plane() -> Iterator[tuple[ControlPlane, Clock]]:
    clock = Clock()
    p = ControlPlane({"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    yield p, clock
    p.close()


def _cmd() -> dict[str, str]:
    return {"actor": "test", "command_id": uuid.uuid4().hex}


def test_certificate_issued_records_the_session(plane: tuple[ControlPlane, Clock]) -> None:
    p, _ = plane
    for user in ("alice", "bob"):
        p.register_user(user, **_cmd())
    expires = NOW + dt.timedelta(hours=1)
    p.start_console_session("s-a", user="alice", expires_at=expires, idle_timeout_s=600, **_cmd())
    done = p.issue_certificate(
        "c1", user="alice", not_before=NOW, not_after=expires, session_id="s-a", **_cmd()
    )
    (event,) = done.events
    assert event.session_id == "s-a" and event.user == "alice"
    with pytest.raises(InvalidCommandError, match="not 'bob'"):
        p.issue_certificate(
            "c2", user="bob", not_before=NOW, not_after=expires, session_id="s-a", **_cmd()
        )
    with pytest.raises(InvalidCommandError, match="outlive"):
        p.issue_certificate(
            "c3",
            user="alice",
            not_before=NOW,
            not_after=expires + dt.timedelta(seconds=1),
            session_id="s-a",
            **_cmd(),
        )
    p.end_console_session("s-a", **_cmd())
    with pytest.raises(InvalidCommandError, match="ended"):
        p.issue_certificate(
            "c4", user="alice", not_before=NOW, not_after=expires, session_id="s-a", **_cmd()
        )
