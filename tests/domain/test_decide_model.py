"""decide() against a reference model written separately, as plainly as possible.

The reference re-reads the raw event list for every question (no indexes, no compiled
rules, no shared helpers beyond the built-in role data) and answers with the rules of the
brief. Hypothesis generates event histories over a small world - so names collide, windows
touch and switches overlap - and requests; both must agree on allow/deny, the status, the
cause of a gate denial and which grant allowed. A second property checks next_deadline: no
decision changes strictly between now and the deadline, and the deadline is the one the
reference computes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import codec
from domain import events as ev
from domain.events import Rule
from domain.policy.attributes import RequestAttributes, attributes_from_http
from domain.policy.decide import Caller, decide
from domain.policy.roles import BUILTIN_ROLES
from domain.policy.state import PolicyState
from tests.domain.builders import T0

USERS = ["u1", "u2", "u3"]
GROUPS = ["g1", "g2", "approvers"]
CLUSTERS = ["c1", "c2", "c3"]
ASKED = st.sampled_from(["c1", "c1", "c2", "c2", "c3"])
GRANT_IDS = [f"gr{i}" for i in range(6)]
SERIALS = ["s-u1", "s-u2", "s-u3", "s-x"]
SESSIONS = ["ss-u1", "ss-u2", "ss-x"]
BG_IDS = ["r1", "r2"]
DISCOVERY = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
             "/openapi/*", "/readyz", "/version", "/version/"]  # fmt: skip
READ = {"get", "list", "watch"}
STANDING = "breakglass.standing_access"


def t(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


# --- generation -----------------------------------------------------------------------------

minutes = st.integers(0, 12)
opt_minutes = st.none() | minutes
users = st.sampled_from(USERS)
groups = st.sampled_from(GROUPS)
_n = iter(range(10**9))


def env(time: int) -> dict[str, Any]:
    return {"id": f"x{next(_n)}", "time": t(time), "actor": "a"}


CUSTOM_RULES = st.sampled_from(
    [
        (Rule(verbs=("get", "list"), resources=("pods",)),),
        (Rule(verbs=("*",), api_groups=("apps",), resources=("deployments", "deployments/scale")),),
        (Rule(verbs=("create",), resources=("pods/exec",), resource_names=("p1",)),),
        (Rule(verbs=("get",), resources=("*/log",)), Rule(verbs=("delete",), resources=("*",))),
        (Rule(verbs=("get",), api_groups=(), non_resource_urls=("/metrics", "/logs/*")),),
        (),
    ]
)
SCOPES = st.sampled_from(["global", "cluster", "user", "group"])
TARGETS = st.sampled_from(["", *USERS, *GROUPS, *CLUSTERS])


@st.composite
def grant_issued(draw: st.DrawFn) -> ev.GrantIssued:
    kind = draw(st.sampled_from(["user", "group"]))
    nb = draw(st.none() | st.none() | minutes)
    return ev.GrantIssued(
        **env(draw(minutes)),
        grant_id=draw(st.sampled_from(GRANT_IDS)),
        subject_kind=kind,
        subject=draw(users if kind == "user" else groups),
        role=draw(
            st.sampled_from(
                ["view", "edit", "admin", "cluster-admin", "cluster-admin", "custom", "root"]
            )
        ),
        clusters=tuple(draw(st.lists(st.sampled_from(["c1", "c2", "c3", "*", "*"]), max_size=2))),
        cluster_selector=draw(st.sampled_from([{}, {"env": "a"}, {"sensitive": "true"}])),
        namespaces=draw(st.sampled_from([(), ("*",), ("n1",), ("n1", "n2")])),
        rules=draw(CUSTOM_RULES),
        not_before=None if nb is None else t(nb),
        expires_at=draw(st.none() | st.none() | st.integers(0, 14).map(t)),
        mode=draw(st.sampled_from(["cli", "browser", "both"])),
        breakglass_id=draw(st.sampled_from(["", *BG_IDS])),
    )


def events_() -> st.SearchStrategy[Any]:
    def e(cls: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.builds(lambda m, **kw: cls(**env(m), **kw), minutes, **fields)

    return st.one_of(
        e(ev.UserRegistered, user=users),
        e(ev.UserDisabled, user=users),
        e(ev.UserEnabled, user=users),
        e(ev.UserAccessRevoked, user=users),
        e(ev.IdpGroupsSynced, user=users, issuer=st.just("i"),
          groups=st.lists(groups, max_size=2).map(tuple)),
        e(ev.MemberAdded, group=groups, user=users),
        e(ev.MemberRemoved, group=groups, user=users),
        e(ev.GroupDeleted, group=groups),
        e(ev.ClusterRegistered, cluster=st.sampled_from(CLUSTERS),
          labels=st.sampled_from([{"env": "a"}, {"env": "b", "sensitive": "true"},
                                  {"sensitive": "true"}, {}])),
        e(ev.ClusterLabelsSet, cluster=st.sampled_from(CLUSTERS),
          labels=st.sampled_from([{"env": "a"}, {"sensitive": "true"}])),
        e(ev.ClusterRemoved, cluster=st.sampled_from(CLUSTERS)),
        grant_issued(),
        grant_issued(),
        e(ev.GrantRevoked, grant_id=st.sampled_from(GRANT_IDS)),
        e(ev.GrantExpired, grant_id=st.sampled_from(GRANT_IDS), expired_at=minutes.map(t)),
        e(ev.KubectlDisabled, scope=SCOPES, target=TARGETS),
        e(ev.KubectlEnabled, scope=SCOPES, target=TARGETS),
        e(ev.BrowserOnlySet, scope=SCOPES, target=TARGETS, enabled=st.booleans()),
        e(ev.ConsoleSessionRequiredSet, scope=SCOPES, target=TARGETS, enabled=st.booleans()),
        e(ev.SettingsChanged, settings=st.sampled_from(
            [{"breakglass.standing_access": v} for v in ("read-only", "none", "junk")])),
        e(ev.ConsoleSessionStarted, session_id=st.sampled_from(SESSIONS), user=users,
          expires_at=st.integers(0, 14).map(t), idle_timeout_s=st.sampled_from([60, 180, 600])),
        e(ev.ConsoleSessionTouched, session_id=st.sampled_from(SESSIONS), user=users),
        e(ev.ConsoleSessionEnded, session_id=st.sampled_from(SESSIONS), user=users),
        e(ev.CertificateIssued, serial=st.sampled_from(SERIALS), user=users,
          not_before=minutes.map(t), not_after=st.integers(0, 14).map(t)),
        e(ev.CertificateRevoked, serial=st.sampled_from(SERIALS), user=users),
        e(ev.BreakGlassRequested, request_id=st.sampled_from(BG_IDS), user=users,
          cluster=st.sampled_from(CLUSTERS), reason=st.just("r"), duration_s=st.just(600)),
        e(ev.BreakGlassApproved, request_id=st.sampled_from(BG_IDS), approver=users,
          grant_id=st.sampled_from(GRANT_IDS)),
        e(ev.BreakGlassDenied, request_id=st.sampled_from(BG_IDS), approver=users),
    )  # fmt: skip


def base() -> list[Any]:
    """A working world to start from, so most generated requests get past the gates."""
    world: list[Any] = []
    for user in USERS:
        world += [
            ev.UserRegistered(**env(0), user=user),
            ev.CertificateIssued(**env(0), serial=f"s-{user}", user=user, not_before=t(0),
                                 not_after=t(30)),
            ev.ConsoleSessionStarted(**env(0), session_id=f"ss-{user}", user=user,
                                     expires_at=t(30), idle_timeout_s=3600),
        ]  # fmt: skip
    world += [
        ev.ClusterRegistered(**env(0), cluster="c1", labels={"env": "a"}),
        ev.ClusterRegistered(**env(0), cluster="c2", labels={"env": "b", "sensitive": "true"}),
        ev.MemberAdded(**env(0), group="g1", user="u1"),
        ev.MemberAdded(**env(0), group="g2", user="u2"),
    ]
    return world


def histories() -> st.SearchStrategy[list[Any]]:
    # one_of would flatten events_() and give grants 1/30 of the draws: pick the kind first
    def chunk(kind: int) -> st.SearchStrategy[list[Any]]:
        if kind < 2:
            return events_().map(lambda e: [e])
        if kind < 4:
            return grant_issued().map(lambda e: [e])
        return breakglass_story()

    chunks = st.lists(st.integers(0, 4).flatmap(chunk), min_size=3, max_size=30)
    return st.tuples(knobs(), chunks).map(
        lambda parts: base() + parts[0] + [e for part in parts[1] for e in part]
    )


def knobs() -> st.SearchStrategy[list[Any]]:
    """A few settings and switches that interact, more often than random events would."""
    choices = [
        [ev.SettingsChanged(**env(0), settings={STANDING: "none"})],
        [ev.SettingsChanged(**env(0), settings={STANDING: "junk"})],
        [ev.ConsoleSessionRequiredSet(**env(0), scope="global", enabled=True)],
        [ev.ConsoleSessionRequiredSet(**env(0), scope="group", target="g1", enabled=True)],
        [ev.BrowserOnlySet(**env(0), scope="user", target="u2", enabled=True)],
        [ev.KubectlDisabled(**env(0), scope="cluster", target="c2")],
        # u1's access revoked at 3 and restored at 4, with a new certificate
        [
            ev.UserAccessRevoked(**env(3), user="u1"),
            ev.UserEnabled(**env(4), user="u1"),
            ev.CertificateIssued(**env(5), serial="s-u1", user="u1", not_before=t(5),
                                 not_after=t(30)),
        ],
        # and a console session for u1 started later
        [ev.ConsoleSessionStarted(**env(8), session_id="ss-u1b", user="u1", expires_at=t(30),
                                  idle_timeout_s=3600)],
    ]  # fmt: skip
    return st.lists(st.sampled_from(choices), max_size=3).map(
        lambda picked: [e for part in picked for e in part]
    )


@st.composite
def breakglass_story(draw: st.DrawFn) -> list[Any]:
    """Request, approval and the grant it creates - coherent, or off in one detail."""
    rid, user, cluster = draw(st.sampled_from(BG_IDS)), draw(users), draw(ASKED)
    gid = draw(st.sampled_from(GRANT_IDS))
    start = draw(minutes)
    grant = draw(grant_issued())
    flaw = draw(st.sampled_from(["none", "none", "none", "grant-id", "user", "cluster"]))
    grant = msgspec.structs.replace(
        grant,
        grant_id=gid if flaw != "grant-id" else f"{gid}-other",
        subject_kind="user",
        subject=user if flaw != "user" else "u3" if user != "u3" else "u1",
        clusters=(cluster if flaw != "cluster" else "c2" if cluster != "c2" else "c1",),
        cluster_selector={},
        not_before=t(start),
        expires_at=t(start + draw(st.integers(1, 8))),
        breakglass_id=rid,
    )
    return [
        ev.BreakGlassRequested(**env(start), request_id=rid, user=user, cluster=cluster,
                               reason="r", duration_s=600),
        ev.BreakGlassApproved(**env(start), request_id=rid, approver="u2", grant_id=gid),
        grant,
    ]  # fmt: skip


REQUESTS = [
    attributes_from_http(m, p, q)
    for m, p, q in [
        ("GET", "/api/v1/namespaces/n1/pods", ""),
        ("GET", "/api/v1/namespaces/n2/pods/p1", ""),
        ("DELETE", "/api/v1/namespaces/n1/pods/p1", ""),
        ("GET", "/api/v1/namespaces/n1/pods/p1/exec", "command=sh"),
        ("GET", "/api/v1/namespaces/n1/pods/p1/log", ""),
        ("GET", "/api/v1/namespaces/n3/secrets", ""),
        ("PATCH", "/apis/apps/v1/namespaces/n1/deployments/d/scale", ""),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/n2/rolebindings", ""),
        ("GET", "/api/v1/nodes", ""),
        ("GET", "/api/v1/pods", "watch=1"),
        ("GET", "/api/v1/namespaces/n1", ""),
        ("GET", "/version", ""),
        ("GET", "/apis/apps/v1", ""),
        ("HEAD", "/version", ""),
        ("GET", "/metrics", ""),
        ("POST", "/logs/kube", ""),
    ]
]


@st.composite
def callers(draw: st.DrawFn, history: list[Any], user: str | None = None) -> Caller:
    """Mostly the caller's own credentials as the history issued them, sometimes anything."""
    via = draw(st.sampled_from(["cli", "browser"]))
    if user is None:
        user = draw(st.sampled_from([*USERS, *USERS, "u4"]))
    honest = draw(st.integers(0, 4)) > 0
    if via == "browser":
        sessions = [e.session_id for e in history
                    if isinstance(e, ev.ConsoleSessionStarted) and e.user == user]  # fmt: skip
        pool = sessions if honest and sessions else ["", *SESSIONS]
        return Caller(user=user, via="browser", session_id=draw(st.sampled_from(pool)))
    if honest:
        issued = [e.not_before for e in history
                  if isinstance(e, ev.CertificateIssued) and e.serial == f"s-{user}"]  # fmt: skip
        nb = issued[-1] if issued else t(0)
        return Caller(user=user, cert_serial=f"s-{user}", cert_not_before=nb)
    return Caller(
        user=user,
        cert_serial=draw(st.sampled_from(["", *SERIALS])),
        cert_not_before=draw(st.none() | minutes.map(t)),
    )


# --- the reference model -------------------------------------------------------------------


class Ref:
    """Plain fold of the raw events into dicts; no cleverness."""

    def __init__(self, events: list[Any]) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.members: dict[str, set[str]] = {}
        self.clusters: dict[str, dict[str, str]] = {}
        self.grants: dict[str, dict[str, Any]] = {}
        self.switches: dict[str, set[tuple[str, str]]] = {"k": set(), "b": set(), "c": set()}
        self.settings: dict[str, Any] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.certs: dict[str, dict[str, Any]] = {}
        self.bg: dict[str, dict[str, Any]] = {}
        for e in events:
            self.fold(e)

    def fold(self, e: Any) -> None:
        u = self.users.get(getattr(e, "user", None))
        name = type(e).__name__
        if name == "UserRegistered" and u is None:
            self.users[e.user] = {"enabled": True, "by": "", "revoked_at": None, "idp": set()}
        elif name == "UserDisabled" and u:
            u.update(enabled=False, by="disabled")
        elif name == "UserEnabled" and u:
            u.update(enabled=True, by="")
        elif name == "UserAccessRevoked" and u:
            last = u["revoked_at"]
            u.update(
                enabled=False,
                by="revoked",
                revoked_at=e.time if last is None else max(last, e.time),
            )
        elif name == "IdpGroupsSynced" and u:
            u["idp"] = set(e.groups)
        elif name == "MemberAdded":
            self.members.setdefault(e.group, set()).add(e.user)
        elif name == "MemberRemoved":
            self.members.get(e.group, set()).discard(e.user)
        elif name == "GroupDeleted":
            self.members[e.group] = set()
        elif name == "ClusterRegistered":
            self.clusters[e.cluster] = dict(e.labels)
        elif name == "ClusterLabelsSet" and e.cluster in self.clusters:
            self.clusters[e.cluster] = dict(e.labels)
        elif name == "ClusterRemoved":
            self.clusters.pop(e.cluster, None)
        elif name == "GrantIssued":
            self.grants[e.grant_id] = {"e": e, "revoked": False, "end": e.expires_at}
        elif name == "GrantRevoked" and e.grant_id in self.grants:
            self.grants[e.grant_id]["revoked"] = True
        elif name == "GrantExpired" and e.grant_id in self.grants:
            g = self.grants[e.grant_id]
            if not g["revoked"] and (g["end"] is None or e.expired_at < g["end"]):
                g["end"] = e.expired_at
        elif name in ("KubectlDisabled", "KubectlEnabled", "BrowserOnlySet",
                      "ConsoleSessionRequiredSet"):  # fmt: skip
            table = {"Kubectl": "k", "BrowserO": "b", "ConsoleS": "c"}
            key = next(v for k, v in table.items() if name.startswith(k))
            on = name == "KubectlDisabled" or getattr(e, "enabled", False)
            item = (e.scope, "" if e.scope == "global" else e.target)
            (self.switches[key].add if on else self.switches[key].discard)(item)
        elif name == "SettingsChanged":
            self.settings.update(e.settings)
        elif name == "ConsoleSessionStarted":
            self.sessions[e.session_id] = {"user": e.user, "start": e.time, "exp": e.expires_at,
                                           "idle": timedelta(seconds=e.idle_timeout_s),
                                           "last": e.time, "ended": False}  # fmt: skip
        elif name == "ConsoleSessionTouched":
            s = self.sessions.get(e.session_id)
            if s and not s["ended"]:
                s["last"] = max(s["last"], e.time)
        elif name == "ConsoleSessionEnded":
            if e.session_id in self.sessions:
                self.sessions[e.session_id]["ended"] = True
        elif name == "CertificateIssued":
            self.certs[e.serial] = {"user": e.user, "nb": e.not_before, "na": e.not_after,
                                    "issued": e.time, "revoked": False}  # fmt: skip
        elif name == "CertificateRevoked" and e.serial in self.certs:
            self.certs[e.serial]["revoked"] = True
        elif name == "BreakGlassRequested" and e.request_id not in self.bg:
            self.bg[e.request_id] = {"user": e.user, "cluster": e.cluster, "status": "pending",
                                     "grant": ""}  # fmt: skip
        elif (
            name == "BreakGlassApproved"
            and self.bg.get(e.request_id, {}).get("status") == "pending"
        ):
            self.bg[e.request_id].update(status="approved", grant=e.grant_id)
        elif (
            name == "BreakGlassDenied" and self.bg.get(e.request_id, {}).get("status") == "pending"
        ):
            self.bg[e.request_id]["status"] = "denied"

    # questions

    def groups(self, user: str) -> set[str]:
        local = {g for g, m in self.members.items() if user in m}
        return local | self.users[user]["idp"]

    def switch_on(self, key: str, user: str, cluster: str) -> bool:
        table = self.switches[key]
        wanted = {("global", ""), ("cluster", cluster), ("user", user)}
        wanted |= {("group", g) for g in self.groups(user)}
        return bool(table & wanted)

    def session_live(self, s: dict[str, Any], now: datetime, revoked_at: Any) -> bool:
        return (
            not s["ended"]
            and s["start"] <= now < s["exp"]
            and now < s["last"] + s["idle"]
            and not (revoked_at is not None and s["start"] < revoked_at)
        )


def rule_ok(rule: Rule, a: RequestAttributes) -> bool:
    if "*" not in rule.verbs and a.verb not in rule.verbs:
        return False
    if not a.is_resource_request:
        for u in rule.non_resource_urls:
            if u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u.rstrip("*"))):
                return True
        return False
    if "*" not in rule.api_groups and a.api_group not in rule.api_groups:
        return False
    res = a.resource + ("/" + a.subresource if a.subresource else "")
    if not any(r == "*" or r == res or (a.subresource and r == "*/" + a.subresource)
               for r in rule.resources):  # fmt: skip
        return False
    return not rule.resource_names or a.name in rule.resource_names


def reference(ref: Ref, c: Caller, cluster: str, a: RequestAttributes, now: datetime) -> dict:
    if c.user not in ref.users:
        return {"allowed": False, "status": 401, "code": "unknown-user"}
    u = ref.users[c.user]
    rev = u["revoked_at"]
    if c.via == "cli":
        cert = ref.certs.get(c.cert_serial)
        if (
            cert is None
            or cert["user"] != c.user
            or cert["revoked"]
            or not cert["nb"] <= now < cert["na"]
            or c.cert_not_before is None
            or (rev is not None and cert["issued"] < rev)
        ):
            return {"allowed": False, "status": 401, "code": "credential"}
    else:
        s = ref.sessions.get(c.session_id)
        if s is None or s["user"] != c.user or not ref.session_live(s, now, rev):
            return {"allowed": False, "status": 401, "code": "credential"}
    if not u["enabled"]:
        return {"allowed": False, "status": 403, "code": "user-" + u["by"]}
    if cluster not in ref.clusters:
        return {"allowed": False, "status": 403, "code": "unknown-cluster"}
    if ref.switch_on("k", c.user, cluster):
        return {"allowed": False, "status": 403, "code": "kubectl-disabled"}
    if c.via == "cli" and ref.switch_on("b", c.user, cluster):
        return {"allowed": False, "status": 403, "code": "browser-only"}
    if c.via == "cli" and ref.switch_on("c", c.user, cluster):
        mine = [s for s in ref.sessions.values() if s["user"] == c.user]
        if not any(ref.session_live(s, now, rev) for s in mine):
            return {"allowed": False, "status": 403, "code": "console-session-required"}
    labels = ref.clusters[cluster]
    standing = ref.settings.get("breakglass.standing_access", "read-only")
    standing_ok = labels.get("sensitive") != "true" or (a.verb in READ and standing == "read-only")
    subjects = {("user", c.user)} | {("group", g) for g in ref.groups(c.user)}
    plain, glass = [], []
    for gid, g in ref.grants.items():
        e = g["e"]
        if g["revoked"] or (e.subject_kind, e.subject) not in subjects:
            continue
        if not (
            "*" in e.clusters
            or cluster in e.clusters
            or (
                e.cluster_selector
                and all(labels.get(k) == v for k, v in e.cluster_selector.items())
            )
        ):
            continue  # fmt: skip
        if (e.not_before is not None and now < e.not_before) or (
            g["end"] is not None and now >= g["end"]
        ):
            continue
        if e.mode not in ("both", c.via):
            continue
        rules = e.rules if e.role == "custom" else BUILTIN_ROLES.get(e.role, ())
        all_ns = not e.namespaces or "*" in e.namespaces
        if a.is_resource_request:
            ok = (all_ns or (a.namespace and a.namespace in e.namespaces)) and any(
                rule_ok(r, a) for r in rules)  # fmt: skip
        else:
            discovery = a.verb == "get" and any(
                p == a.path or (p.endswith("*") and a.path.startswith(p[:-1])) for p in DISCOVERY
            )
            ok = discovery or (all_ns and any(rule_ok(r, a) for r in rules))  # fmt: skip
        if not ok:
            continue
        bg = ref.bg.get(e.breakglass_id) if e.breakglass_id else None
        real_bg = (
            bg is not None
            and bg["status"] == "approved"
            and bg["grant"] == gid
            and bg["cluster"] == cluster
            and (e.subject_kind, e.subject) == ("user", bg["user"])
        )
        if real_bg:
            glass.append((gid, e.breakglass_id))
        elif standing_ok:
            plain.append((gid, ""))
    if plain or glass:
        gid, bgid = min(plain) if plain else min(glass)
        return {"allowed": True, "status": 200, "grant_id": gid, "breakglass_id": bgid}
    return {"allowed": False, "status": 403, "code": "grant"}


GATE_CODES = {
    "credential": {"certificate-unknown", "certificate-revoked", "certificate-expired",
                   "certificate-predates-revocation", "session-unknown", "session-ended",
                   "session-expired", "session-idle", "session-predates-revocation"},
    "grant": {"no-grant", "grant-expired", "grant-not-yet-valid", "grant-mode",
              "breakglass-required", "grant-revoked"},
}  # fmt: skip


def check(state: PolicyState, ref: Ref, c: Caller, cluster: str, a: RequestAttributes,
          now: datetime) -> None:  # fmt: skip
    got = decide(state, c, cluster, a, now)
    want = reference(ref, c, cluster, a, now)
    context = (c, cluster, a.describe(), now, got)
    assert (got.allowed, got.status) == (want["allowed"], want["status"]), (context, want)
    if got.allowed:
        assert (got.grant_id, got.breakglass_id) == (want["grant_id"], want["breakglass_id"]), (
            context
        )
    else:
        assert got.code in GATE_CODES.get(want["code"], {want["code"]}), (context, want)


COMMON = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def instants(history: list[Any]) -> list[datetime]:
    """Every instant the history mentions, each also a microsecond before: where edges are."""
    found: set[datetime] = set()
    for event in history:
        for name in event.__struct_fields__:
            value = getattr(event, name)
            if isinstance(value, datetime):
                found.add(value)
                if name == "time" and isinstance(
                    event, ev.ConsoleSessionStarted | ev.ConsoleSessionTouched
                ):
                    found.update(value + timedelta(seconds=s) for s in (60, 180, 600, 3600))
    return sorted(found | {i - timedelta(microseconds=1) for i in found})


MEMBERS = {"g1": "u1", "g2": "u2"}


@st.composite
def targeted(draw: st.DrawFn, history: list[Any]) -> tuple:
    """An ask aimed at one grant of the history: its holder, one of its clusters, at one of
    its edges - so allows, and the instants where they stop, are common."""
    grants = [e for e in history if isinstance(e, ev.GrantIssued)]
    if not grants:
        return draw(untargeted(history))
    g = draw(st.sampled_from(grants))
    holder = g.subject if g.subject_kind == "user" else MEMBERS.get(g.subject)
    caller = draw(callers(history, holder or draw(st.sampled_from(USERS))))
    cluster = draw(st.sampled_from([c for c in g.clusters if c != "*"] or ["c1", "c2"]))
    edges = [x for x in (g.not_before, g.expires_at) if x is not None]
    edges += [x - timedelta(microseconds=1) for x in edges]
    now = draw(st.sampled_from(edges or instants(history)))
    return caller, cluster, draw(st.sampled_from(REQUESTS)), now


@st.composite
def untargeted(draw: st.DrawFn, history: list[Any]) -> tuple:
    moments = st.sampled_from(instants(history)) | st.integers(0, 15).map(t)
    return draw(callers(history)), draw(ASKED), draw(st.sampled_from(REQUESTS)), draw(moments)


def asks_for(history: list[Any], max_size: int = 8) -> st.SearchStrategy[list[tuple]]:
    one = st.integers(0, 1).flatmap(lambda k: targeted(history) if k else untargeted(history))
    return st.lists(one, min_size=1, max_size=max_size)


@COMMON
@given(histories(), st.data())
def test_decide_matches_reference(history: list[Any], data: st.DataObject) -> None:
    state = PolicyState().apply_all(history)
    ref = Ref(history)
    for caller, cluster, attrs, now in data.draw(asks_for(history)):
        check(state, ref, caller, cluster, attrs, now)


@settings(max_examples=150, deadline=None)
@given(histories(), st.data())
def test_decoded_log_decides_the_same(history: list[Any], data: st.DataObject) -> None:
    replayed = [codec.decode(codec.encode(e)) for e in history]
    a, b = PolicyState().apply_all(history), PolicyState().apply_all(replayed)
    for caller, cluster, attrs, now in data.draw(asks_for(history)):
        assert decide(a, caller, cluster, attrs, now) == decide(b, caller, cluster, attrs, now)


def reference_deadline(ref: Ref, now: datetime) -> datetime | None:
    instants = []
    for g in ref.grants.values():
        if not g["revoked"]:
            instants += [g["e"].not_before, g["end"]]
    for s in ref.sessions.values():
        if not s["ended"]:
            instants += [s["start"], s["exp"], s["last"] + s["idle"]]
    for cert in ref.certs.values():
        if not cert["revoked"]:
            instants += [cert["nb"], cert["na"]]
    later = [i for i in instants if i is not None and i > now]
    return min(later) if later else None


@COMMON
@given(histories(), st.data(), st.integers(0, 15), st.floats(0, 1))
def test_nothing_changes_before_the_next_deadline(
    history: list[Any], data: st.DataObject, minute: int, fraction: float
) -> None:
    state = PolicyState().apply_all(history)
    ref = Ref(history)
    now = t(minute) - timedelta(seconds=30)  # between whole minutes too
    deadline = state.next_deadline(now)
    assert deadline == reference_deadline(ref, now)
    if deadline is None:
        later = [now + timedelta(minutes=20), now + timedelta(days=400)]
    else:
        span = deadline - now
        later = [now + span * fraction, deadline - timedelta(microseconds=1)]
        later = [moment for moment in later if moment < deadline]
    for caller, cluster, attrs, _ in data.draw(asks_for(history, 6)):
        first = decide(state, caller, cluster, attrs, now)
        for moment in later:
            assert decide(state, caller, cluster, attrs, moment) == first, (moment, deadline)
        if deadline is not None:  # the edge itself, judged by the reference
            check(state, ref, caller, cluster, attrs, deadline)
            check(state, ref, caller, cluster, attrs, deadline - timedelta(microseconds=1))


@settings(max_examples=150, deadline=None)
@given(histories(), st.data())
def test_queries_between_events_do_not_stale_the_state(
    history: list[Any], data: st.DataObject
) -> None:
    """Caches filled by decisions made mid-log must not survive the events that follow."""
    fresh = PolicyState().apply_all(history)
    live = PolicyState()
    asks = data.draw(asks_for(history))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(history)), max_size=4)))
    done = 0
    for cut in [*cuts, len(history)]:
        live.apply_all(history[done:cut])
        done = cut
        for caller, cluster, attrs, now in asks:
            decide(live, caller, cluster, attrs, now)
    for caller, cluster, attrs, now in asks:
        assert decide(live, caller, cluster, attrs, now) == decide(
            fresh, caller, cluster, attrs, now
        )
