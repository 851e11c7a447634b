"""Which control-log families a relay's policy projection follows."""

from __future__ import annotations

from broker import subjects
from domain import events
from domain.policy.state import PolicyState
from relay.service import policy_filter


def _family(subject: str) -> str:
    prefix = f"{subjects.CONTROL_PREFIX}."
    assert subject.startswith(prefix) and subject.endswith(".*"), subject
    return subject[len(prefix) : -2]


def test_relay_follows_every_family_policy_folds_and_nothing_else() -> None:
    followed = {_family(s) for s in policy_filter()}
    folded = PolicyState.folded_types()
    needed = {
        cls.FAMILY for cls in events.CATALOG.values() if cls.STREAM == "control" and cls in folded
    }
    assert followed == needed
    assert {"user", "grant", "group", "cluster", "switch", "session", "cert"} <= followed
    # password hashes never; other relays' accounts and logins cannot change a plan
    assert not followed & {"credential", "serviceaccount", "login"}
    assert events.UserAccessRevoked in folded and events.ServiceAccountRemoved not in folded
