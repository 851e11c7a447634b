"""Each user's binding plan on this cluster, read from the relay's policy projection.

`binding_plan` is pure and cheap, but it runs on every request, so plans are cached until the
projection applies another event or the next time-based deadline passes (a grant starts or
expires), whichever comes first. Service-account names are deterministic, so every relay
replica of a cluster plans the same objects for the same user.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import msgspec

from domain.policy.bindings import BindingPlan, binding_plan, owner_label
from domain.policy.state import PolicyState

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def service_account_name(user: str) -> str:
    """A DNS-label-safe name for `user`'s account: a readable part and a hash of the user id
    (two ids that slug alike, `Alice` and `alice`, still get different accounts)."""
    readable = _UNSAFE.sub("-", user.lower()).strip("-")[:40].strip("-") or "user"
    digest = hashlib.sha256(user.encode()).hexdigest()[:12]
    return f"kg-{readable}-{digest}"


def fingerprint(plan: BindingPlan) -> str:
    """Identifies a plan's content: equal fingerprints need no reconciliation."""
    return hashlib.sha256(msgspec.json.encode(plan)).hexdigest()


class PolicyView(Protocol):
    """What the planner reads: the projection's state, its version and clock."""

    state: PolicyState
    version: int
    clock: Callable[[], datetime]


class Planner:
    """Plans for one cluster and one service-account namespace."""

    def __init__(self, policy: PolicyView, cluster: str, namespace: str) -> None:
        self.policy = policy
        self.cluster = cluster
        self.namespace = namespace
        self._cache: dict[str, tuple[int, datetime | None, BindingPlan, str]] = {}

    def now(self) -> datetime:
        return self.policy.clock()

    def owner(self, user: str) -> str:
        """The `kubegate.io/owner` label value on everything made for `user`."""
        return owner_label(self.namespace, service_account_name(user))

    def plan(self, user: str) -> BindingPlan:
        return self.current(user)[0]

    def current(self, user: str) -> tuple[BindingPlan, str]:
        """The user's plan now and its fingerprint (both cached: this runs per request)."""
        now = self.now()
        version = self.policy.version
        cached = self._cache.get(user)
        if cached is not None:
            seen, until, plan, fp = cached
            if seen == version and (until is None or now < until):
                return plan, fp
        state = self.policy.state
        plan = binding_plan(
            state,
            user,
            self.cluster,
            now,
            sa_name=service_account_name(user),
            sa_namespace=self.namespace,
        )
        if len(self._cache) > 50_000:
            self._cache.clear()
        fp = fingerprint(plan)
        self._cache[user] = (version, state.next_deadline(now), plan, fp)
        return plan, fp

    def removal_reason(self, user: str) -> str:
        """Why a user's account goes away when the plan is empty: `revoked` when the user was
        disabled or had access revoked, `access-changed` when grants ended or switched off."""
        record = self.policy.state.users.get(user)
        if record is None or not record.enabled:
            return "revoked"
        return "access-changed"

    def live_grant_ids(self) -> set[str]:
        """Grants not revoked and not yet expired (their ClusterRoles may still be needed)."""
        now = self.now()
        return {
            g.grant_id
            for g in self.policy.state.grants.values()
            if g.revoked_at is None and (g.expires_at is None or now < g.expires_at)
        }
