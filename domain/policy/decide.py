"""The decision for one Kube API request at the edge: deny unless every rule lets it through.

Checks, in order; the first that fails decides:

1. the user is known (401 `unknown-user`);
2. the credential (401): from a downloaded kubeconfig (`cli`), the client certificate is one
   kubegate issued to this user, not revoked, within its validity, and its not_before is not
   earlier than the user's last access revocation; from the browser shell, the console session
   belongs to the user, has not ended, is within its idle and absolute expiry, and started
   after the last revocation;
3. the user is enabled (403 `user-disabled` / `user-revoked`);
4. the cluster is registered (403 `unknown-cluster`);
5. kubectl is not switched off globally, for the cluster, the user or any of the user's groups
   (403 `kubectl-disabled`; applies to cli and browser alike);
6. cli only: no browser-only switch applies (403 `browser-only`), and if a
   console-session-required switch applies the user has a live console session
   (403 `console-session-required`);
7. an active grant allows the request (403 otherwise; the reason names the closest miss:
   `breakglass-required`, `grant-mode`, `grant-expired`, `grant-not-yet-valid`,
   `grant-revoked`, `no-grant`, in that order of preference).

Why 401 for credential failures and 403 for the rest: 401 is Kubernetes' "who are you?" and
kubectl answers it with "You must be logged in to the server" - exactly what a user with a
revoked or superseded kubeconfig must do (download a new one). Everything after that is "we
know who you are and the answer is no", which kubectl shows as `Error from server (Forbidden)`
with our reason.

Revocation compares the not_before of the certificate the client presented (the edge reads
it from the TLS peer certificate) with the user's last `UserAccessRevoked`; an equal instant
passes. A CA that backdates not_before for clock skew errs on the safe side: a certificate
issued within that margin after a revocation is refused too.

Grants: a grant reaches the user directly or through any group (local or IdP); it matches the
cluster by name, `*` or all of its label selector; it is active in [not_before, expires_at);
its mode allows the access path; its namespaces (empty or `*` = all, including cluster-scoped
resources) contain the request's namespace; its role's rules (or custom rules) allow the
request with Kubernetes RBAC semantics. Non-resource URLs need an all-namespace grant, except
the discovery paths of Kubernetes' `system:discovery` role, which any active grant on the
cluster allows.

Sensitive clusters (label `sensitive=true`): a grant created by an approved break-glass request
for this cluster allows as its role says; any other ("standing") grant allows only get, list
and watch, or nothing when the setting `breakglass.standing_access` is `none` (default
`read-only`, see `domain.policy.settings`).

When several grants allow, the decision names the smallest grant id, standing grants before
break-glass ones, so audit shows break-glass use only when nothing else would have done. A
decision made by a break-glass grant carries its request id (`breakglass_id`), on any cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from domain.policy import roles
from domain.policy.attributes import RequestAttributes
from domain.policy.errors import InvalidCallerError
from domain.policy.rules import READ_ONLY_VERBS
from domain.policy.state import (
    ClusterRecord,
    GrantRecord,
    PolicyState,
    SwitchKey,
    SwitchRecord,
    UserRecord,
    require_aware,
)

Via = Literal["cli", "browser"]


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking and through what: `cli` carries the client certificate's serial and
    not_before; `browser` carries the console session id."""

    user: str
    via: Via = "cli"
    cert_serial: str = ""
    cert_not_before: datetime | None = None
    session_id: str = ""

    def __post_init__(self) -> None:
        if self.via not in ("cli", "browser"):
            raise InvalidCallerError(f"unknown access path {self.via!r}")


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The answer. `status` is 200 when allowed, else the HTTP status to send; `code` is a
    stable machine name for the cause; `reason` one line for a person."""

    allowed: bool
    status: int
    code: str
    reason: str
    grant_id: str = ""
    breakglass_id: str = ""


def _deny(status: int, code: str, reason: str) -> Decision:
    return Decision(allowed=False, status=status, code=code, reason=reason)


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def decide(
    state: PolicyState, caller: Caller, cluster: str, attrs: RequestAttributes, now: datetime
) -> Decision:
    """Allow or deny one request of `caller` to `cluster` at `now`."""
    require_aware(now, "now")
    user = state.users.get(caller.user)
    if user is None:
        return _deny(401, "unknown-user", f"user {caller.user} is not known to kubegate")
    denial = _credential(state, caller, user, now)
    if denial is not None:
        return denial
    if not user.enabled:
        if user.disabled_by == "revoked":
            return _deny(
                403,
                "user-revoked",
                f"access for {user.user} was revoked at {_ts(user.disabled_at or now)}",
            )
        return _deny(403, "user-disabled", f"user {user.user} is disabled")
    target = state.clusters.get(cluster)
    if target is None:
        return _deny(403, "unknown-cluster", f"cluster {cluster} is not registered")
    groups = sorted(state.groups_of(user.user))
    scope = switch_scope(state.kubectl_disabled, cluster, user.user, groups)
    if scope is not None:
        return _deny(403, "kubectl-disabled", f"kubectl is disabled {scope}")
    if caller.via == "cli":
        scope = switch_scope(state.browser_only, cluster, user.user, groups)
        if scope is not None:
            return _deny(
                403,
                "browser-only",
                f"access is browser-only {scope}: use the kubegate browser shell",
            )
        scope = switch_scope(state.console_required, cluster, user.user, groups)
        if scope is not None and state.live_session(user.user, now) is None:
            return _deny(
                403,
                "console-session-required",
                f"a live console session is required {scope}: log in to the kubegate console",
            )
    return _grants(state, caller, user, target, attrs, now)


def _credential(
    state: PolicyState, caller: Caller, user: UserRecord, now: datetime
) -> Decision | None:
    if caller.via == "browser":
        session = state.sessions.get(caller.session_id) if caller.session_id else None
        if session is None or session.user != user.user:
            return _deny(401, "session-unknown", "no console session of this user")
        if session.ended_at is not None:
            return _deny(401, "session-ended", f"console session ended ({session.end_reason})")
        if now < session.started_at:
            return _deny(401, "session-unknown", "console session has not started yet")
        if user.revoked_at is not None and session.started_at < user.revoked_at:
            return _deny(
                401,
                "session-predates-revocation",
                f"console session started before access was revoked at {_ts(user.revoked_at)}",
            )
        if now >= session.expires_at:
            return _deny(
                401, "session-expired", f"console session expired at {_ts(session.expires_at)}"
            )
        if now >= session.idle_deadline:
            return _deny(
                401,
                "session-idle",
                f"console session idle since {_ts(session.last_activity)}",
            )
        return None
    cert = state.certificates.get(caller.cert_serial) if caller.cert_serial else None
    if cert is None or cert.user != user.user:
        return _deny(
            401, "certificate-unknown", "client certificate was not issued by kubegate to you"
        )
    if cert.revoked_at is not None:
        return _deny(
            401, "certificate-revoked", f"client certificate was revoked at {_ts(cert.revoked_at)}"
        )
    if now < cert.not_before or now >= cert.not_after:
        return _deny(
            401,
            "certificate-expired",
            f"client certificate is valid from {_ts(cert.not_before)} to {_ts(cert.not_after)}",
        )
    presented = caller.cert_not_before
    if presented is None:
        return _deny(401, "certificate-unknown", "client certificate has no validity period")
    require_aware(presented, "cert_not_before")
    # When kubegate issued it (the log's CertificateIssued), not the certificate's own
    # not_before, which the CA backdates for clock skew: a kubeconfig downloaded right after
    # a re-enable must work.
    if user.revoked_at is not None and cert.issued_at < user.revoked_at:
        return _deny(
            401,
            "certificate-predates-revocation",
            f"client certificate was issued before access was revoked at "
            f"{_ts(user.revoked_at)}: download a new kubeconfig",
        )
    return None


def applicable_switch(
    table: dict[SwitchKey, SwitchRecord], cluster: str, user: str, groups: list[str]
) -> SwitchKey | None:
    """The switch in `table` that applies to this user on this cluster (global first, then
    cluster, user, groups in name order), or None."""
    if not table:
        return None
    for key in (("global", ""), ("cluster", cluster), ("user", user)):
        if key in table:
            return key
    for group in groups:
        if ("group", group) in table:
            return ("group", group)
    return None


def scope_words(key: SwitchKey) -> str:
    """`globally`, `for cluster prod`, `for user alice`, `for group devs`."""
    return "globally" if key[0] == "global" else f"for {key[0]} {key[1]}"


def switch_scope(
    table: dict[SwitchKey, SwitchRecord], cluster: str, user: str, groups: list[str]
) -> str | None:
    """Which switch in `table` applies, as words for a reason; None if none does."""
    key = applicable_switch(table, cluster, user, groups)
    return None if key is None else scope_words(key)


def grant_allows(grant: GrantRecord, attrs: RequestAttributes) -> bool:
    """Whether the grant's scope and rules cover the request (ignoring time, mode, cluster
    sensitivity): the RBAC half of the decision."""
    if roles.DISCOVERY.allows(attrs):
        return True
    if not attrs.is_resource_request:
        return grant.all_namespaces and grant.rules.allows(attrs)
    return grant.covers_namespace(attrs.namespace) and grant.rules.allows(attrs)


def _grants(
    state: PolicyState,
    caller: Caller,
    user: UserRecord,
    cluster: ClusterRecord,
    attrs: RequestAttributes,
    now: datetime,
) -> Decision:
    sensitive = cluster.sensitive
    standing_ok = not sensitive or (
        attrs.verb in READ_ONLY_VERBS and state.settings.standing_access == "read-only"
    )
    fallback: tuple[GrantRecord, str] | None = None
    for grant in state.candidates(user.user, cluster):  # sorted by grant id
        if not (grant.active_at(now) and grant.allows_via(caller.via)):
            continue
        bg = state.valid_breakglass(grant, cluster.cluster) if grant.breakglass_id else None
        if bg is None:
            if standing_ok and grant_allows(grant, attrs):
                return Decision(
                    allowed=True, status=200, code="allowed",
                    reason=f"allowed by grant {grant.grant_id}", grant_id=grant.grant_id,
                )  # fmt: skip
        elif fallback is None and grant_allows(grant, attrs):
            fallback = (grant, bg.request_id)
    if fallback is not None:
        grant, request_id = fallback
        return Decision(
            allowed=True,
            status=200,
            code="allowed-breakglass",
            reason=f"allowed by break-glass grant {grant.grant_id} (request {request_id})",
            grant_id=grant.grant_id,
            breakglass_id=request_id,
        )
    return _why_not(state, caller, user, cluster, attrs, now, standing_ok)


def _why_not(
    state: PolicyState,
    caller: Caller,
    user: UserRecord,
    cluster: ClusterRecord,
    attrs: RequestAttributes,
    now: datetime,
    standing_ok: bool,
) -> Decision:
    """The closest miss among grants that would have allowed the request's content."""
    what = f"{attrs.describe()} on cluster {cluster.cluster}"
    near: dict[str, GrantRecord] = {}
    for grant in state.candidates(user.user, cluster):
        if grant_allows(grant, attrs):
            for code, hit in _blockers(state, grant, caller, cluster, now, standing_ok):
                if hit and code not in near:
                    near[code] = grant
    if "breakglass-required" in near:
        g = near["breakglass-required"]
        if state.settings.standing_access == "none":
            detail = "standing access is disabled there (breakglass.standing_access=none)"
        else:
            detail = f"standing grants such as {g.grant_id} allow only get, list and watch there"
        return _deny(
            403,
            "breakglass-required",
            f"cluster {cluster.cluster} is sensitive and {detail}: {what} needs an approved "
            "break-glass request",
        )
    if "grant-mode" in near:
        g = near["grant-mode"]
        path = "the browser shell" if g.mode == "browser" else "a downloaded kubeconfig"
        return _deny(403, "grant-mode", f"grant {g.grant_id} allows {what} only through {path}")
    if "grant-expired" in near:
        g = near["grant-expired"]
        return _deny(
            403, "grant-expired", f"grant {g.grant_id} expired at {_ts(g.expires_at or now)}"
        )
    if "grant-not-yet-valid" in near:
        g = near["grant-not-yet-valid"]
        return _deny(
            403,
            "grant-not-yet-valid",
            f"grant {g.grant_id} is valid from {_ts(g.not_before or now)}",
        )
    revoked = sorted(
        (g for s in state.subjects_of(user.user) for g in state.revoked_grants(s)),
        key=lambda g: g.grant_id,
    )
    for grant in revoked:
        if grant.matches_cluster(cluster) and grant_allows(grant, attrs):
            return _deny(
                403,
                "grant-revoked",
                f"grant {grant.grant_id} that allowed {what} was revoked at "
                f"{_ts(grant.revoked_at or now)}",
            )
    return _deny(403, "no-grant", f"no grant allows {user.user} to {what}")


def _blockers(
    state: PolicyState,
    grant: GrantRecord,
    caller: Caller,
    cluster: ClusterRecord,
    now: datetime,
    standing_ok: bool,
) -> list[tuple[str, bool]]:
    expired = grant.expires_at is not None and now >= grant.expires_at
    early = grant.not_before is not None and now < grant.not_before
    return [
        ("grant-expired", expired),
        ("grant-not-yet-valid", early and not expired),
        ("grant-mode", not grant.allows_via(caller.via) and grant.active_at(now)),
        (
            "breakglass-required",
            grant.active_at(now)
            and grant.allows_via(caller.via)
            and not standing_ok
            and state.valid_breakglass(grant, cluster.cluster) is None,
        ),
    ]
