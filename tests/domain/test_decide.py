"""decide(): every rule, switch and time-window edge, table by table."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain.events import Rule
from domain.policy.attributes import attributes_from_http
from domain.policy.decide import Caller, Decision, decide
from domain.policy.errors import InvalidCallerError, NaiveTimeError
from domain.policy.state import PolicyState
from tests.domain import builders as b
from tests.domain.builders import at

PODS = "/api/v1/namespaces/shop/pods"
US = timedelta(microseconds=1)

BASE = [
    b.user("alice"),
    b.cert("c-alice", "alice", t=0),
    b.user("bob"),
    b.cert("c-bob", "bob", t=0),
    b.cluster("dev", env="dev"),
    b.cluster("prod", env="prod", sensitive="true"),
]


def world(*events: object) -> PolicyState:
    return PolicyState().apply_all([*BASE, *events])


def ask(
    state: PolicyState,
    user: str = "alice",
    cluster: str = "dev",
    method: str = "GET",
    path: str = PODS,
    query: str = "",
    now: float | datetime = 60,
    via: str = "cli",
    serial: str | None = None,
    not_before: datetime | None = None,
    session: str = "",
) -> Decision:
    when = now if isinstance(now, datetime) else at(now)
    if via == "browser":
        caller = Caller(user=user, via="browser", session_id=session)
    else:
        serial = f"c-{user}" if serial is None else serial
        if not_before is None and serial in state.certificates:
            not_before = state.certificates[serial].not_before
        caller = Caller(user=user, via="cli", cert_serial=serial, cert_not_before=not_before)
    return decide(state, caller, cluster, attributes_from_http(method, path, query), when)


def allowed(d: Decision, grant_id: str) -> None:
    assert (d.allowed, d.status, d.grant_id) == (True, 200, grant_id), d


def denied(d: Decision, code: str, status: int = 403, *words: str) -> None:
    assert (d.allowed, d.status, d.code) == (False, status, code), d
    for word in words:
        assert word in d.reason, d.reason


# --- deny by default ----------------------------------------------------------------------


def test_nothing_granted_nothing_allowed() -> None:
    denied(ask(world()), "no-grant", 403, "no grant allows alice to list pods in namespace shop")


def test_a_grant_allows() -> None:
    allowed(ask(world(b.grant("g1", "alice"))), "g1")


def test_unknown_access_path_is_refused() -> None:
    with pytest.raises(InvalidCallerError):
        Caller(user="alice", via="both")  # type: ignore[arg-type]


def test_naive_now_is_refused() -> None:
    with pytest.raises(NaiveTimeError):
        ask(world(), now=datetime(2026, 3, 1, 13))


# --- identity and credentials -------------------------------------------------------------


def test_unknown_user_is_401() -> None:
    denied(ask(world(b.grant("g1", "zed")), user="zed"), "unknown-user", 401, "zed")


@pytest.mark.parametrize(
    ("extra", "serial", "code"),
    [
        ([], "", "certificate-unknown"),
        ([], "c-nope", "certificate-unknown"),
        ([], "c-bob", "certificate-unknown"),  # bob's certificate presented as alice
        ([b.cert_revoked("c-alice", "alice", t=10)], None, "certificate-revoked"),
        ([b.cert("c-alice", "alice", t=0, na=60)], None, "certificate-expired"),
        ([b.cert("c-alice", "alice", t=0, nb=61)], None, "certificate-expired"),
    ],
)
def test_certificate_failures_are_401(extra: list, serial: str | None, code: str) -> None:
    state = world(b.grant("g1", "alice"), *extra)
    denied(ask(state, serial=serial), code, 401)


def test_certificate_validity_edges() -> None:
    state = world(b.grant("g1", "alice"), b.cert("c-alice", "alice", t=0, nb=10, na=60))
    denied(ask(state, now=at(10) - US), "certificate-expired", 401)
    allowed(ask(state, now=10), "g1")
    allowed(ask(state, now=at(60) - US), "g1")
    denied(ask(state, now=60), "certificate-expired", 401)


def test_revocation_refuses_older_certificates_even_after_reenable() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.revoked("alice", t=30, reason="laptop stolen"),
        b.cert("c-new", "alice", t=35),
        b.enabled("alice", t=40),
    )
    denied(ask(state), "certificate-predates-revocation", 401, "revoked at 2026-03-01T12:30:00Z")
    allowed(ask(state, serial="c-new", not_before=at(35)), "g1")


def test_revoked_user_stays_refused_until_enabled() -> None:
    state = world(b.grant("g1", "alice"), b.revoked("alice", t=30), b.cert("c-new", "alice", t=35))
    denied(ask(state, serial="c-new", not_before=at(35)), "user-revoked", 403, "revoked at")


@pytest.mark.parametrize(
    ("issued", "ok"),
    [(at(30) - US, False), (at(30), True), (at(31), True)],
)
def test_certificate_issued_at_the_instant_of_revocation(issued: datetime, ok: bool) -> None:
    state = world(
        b.grant("g1", "alice"),
        b.revoked("alice", t=30),
        b.enabled("alice", t=31),
        b.cert("c-x", "alice", t=issued, nb=0),
    )
    d = ask(state, serial="c-x", not_before=at(0))
    assert d.allowed is ok, d


def test_a_backdated_certificate_issued_after_the_revocation_works() -> None:
    """The CA backdates not_before for clock skew; what counts is when kubegate issued it."""
    state = world(
        b.grant("g1", "alice"),
        b.revoked("alice", t=30),
        b.enabled("alice", t=31),
        b.cert("c-new", "alice", t=32, nb=27),
    )
    allowed(ask(state, serial="c-new", not_before=at(27)), "g1")


def test_the_last_revocation_counts() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.revoked("alice", t=10),
        b.enabled("alice", t=11),
        b.cert("c-2", "alice", t=20),
        b.revoked("alice", t=30),
        b.enabled("alice", t=31),
    )
    denied(ask(state, serial="c-2", not_before=at(20)), "certificate-predates-revocation", 401)


def test_cli_without_certificate_validity_is_401() -> None:
    state = world(b.grant("g1", "alice"))
    caller = Caller(user="alice", via="cli", cert_serial="c-alice", cert_not_before=None)
    d = decide(state, caller, "dev", attributes_from_http("GET", PODS), at(60))
    denied(d, "certificate-unknown", 401)


def test_disabled_user_is_403() -> None:
    state = world(b.grant("g1", "alice"), b.disabled("alice", t=10, reason="left"))
    denied(ask(state), "user-disabled", 403, "alice is disabled")
    allowed(
        ask(world(b.grant("g1", "alice"), b.disabled("alice", 10), b.enabled("alice", 20))), "g1"
    )


# --- browser shell and console sessions ----------------------------------------------------


def test_browser_needs_a_live_session_of_the_user() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.session("s1", "alice", t=0, expires=120, idle_s=600),
        b.session("s-bob", "bob", t=0),
    )
    allowed(ask(state, via="browser", session="s1", now=5), "g1")
    denied(ask(state, via="browser", session="", now=5), "session-unknown", 401)
    denied(ask(state, via="browser", session="s-bob", now=5), "session-unknown", 401)
    # idle: last activity at 0, idle 10 min
    allowed(ask(state, via="browser", session="s1", now=at(10) - US), "g1")
    denied(ask(state, via="browser", session="s1", now=10), "session-idle", 401)


def test_touch_extends_idle_but_not_absolute_expiry() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.session("s1", "alice", t=0, expires=30, idle_s=600),
        b.touched("s1", "alice", t=8),
        b.touched("s1", "alice", t=5),  # late, older touch does not move it back
        b.touched("s1", "alice", t=25),
    )
    allowed(ask(state, via="browser", session="s1", now=17), "g1")
    allowed(ask(state, via="browser", session="s1", now=at(30) - US), "g1")
    denied(ask(state, via="browser", session="s1", now=30), "session-expired", 401)


def test_ended_session_and_revocation_cut_the_browser() -> None:
    state = world(
        b.grant("g1", "alice"), b.session("s1", "alice"), b.session_ended("s1", "alice", 3)
    )
    denied(ask(state, via="browser", session="s1", now=4), "session-ended", 401)
    state = world(
        b.grant("g1", "alice"),
        b.session("s1", "alice", t=0),
        b.revoked("alice", t=2),
        b.enabled("alice", t=3),
        b.session("s2", "alice", t=4),
    )
    denied(ask(state, via="browser", session="s1", now=5), "session-predates-revocation", 401)
    allowed(ask(state, via="browser", session="s2", now=5), "g1")


# --- clusters -----------------------------------------------------------------------------


def test_unknown_and_removed_clusters() -> None:
    denied(ask(world(b.grant("g1", "alice")), cluster="nowhere"), "unknown-cluster", 403, "nowhere")
    state = world(b.grant("g1", "alice"), b.cluster_removed("dev", t=1))
    denied(ask(state), "unknown-cluster")


@pytest.mark.parametrize(
    ("grant_kw", "cluster", "ok"),
    [
        ({"clusters": ("dev",)}, "dev", True),
        ({"clusters": ("stage",)}, "dev", False),
        ({"clusters": ("*",)}, "dev", True),
        ({"clusters": ()}, "dev", False),
        ({"clusters": (), "cluster_selector": {"env": "dev"}}, "dev", True),
        ({"clusters": (), "cluster_selector": {"env": "dev", "team": "a"}}, "dev", False),
        ({"clusters": ("stage",), "cluster_selector": {"env": "dev"}}, "dev", True),
        ({"clusters": (), "cluster_selector": {"env": "prod"}}, "dev", False),
    ],
)
def test_cluster_matching(grant_kw: dict, cluster: str, ok: bool) -> None:
    d = ask(world(b.grant("g1", "alice", **grant_kw)), cluster=cluster)
    assert d.allowed is ok, d


def test_label_change_moves_selector_grants() -> None:
    state = world(b.grant("g1", "alice", clusters=(), cluster_selector={"env": "qa"}))
    assert not ask(state).allowed
    state.apply(b.labels("dev", t=1, env="qa"))
    allowed(ask(state), "g1")


# --- kubectl, browser-only and console-session switches ------------------------------------


@pytest.mark.parametrize(
    ("switch", "words"),
    [
        (b.kubectl_off("global"), "globally"),
        (b.kubectl_off("cluster", "dev"), "for cluster dev"),
        (b.kubectl_off("user", "alice"), "for user alice"),
        (b.kubectl_off("group", "devs"), "for group devs"),
        (b.kubectl_off("group", "sre"), "for group sre"),  # an IdP group
    ],
)
@pytest.mark.parametrize("via", ["cli", "browser"])
def test_kubectl_switches_apply_to_both_paths(switch: object, words: str, via: str) -> None:
    state = world(
        b.grant("g1", "alice"),
        b.member("devs", "alice"),
        b.idp("alice", "sre"),
        b.session("s1", "alice", t=50),
        switch,
    )
    denied(ask(state, via=via, session="s1"), "kubectl-disabled", 403, "kubectl is disabled", words)


@pytest.mark.parametrize(
    "switch",
    [
        b.kubectl_off("cluster", "prod"),
        b.kubectl_off("user", "bob"),
        b.kubectl_off("group", "ops"),
    ],
)
def test_kubectl_switches_elsewhere_do_not_apply(switch: object) -> None:
    allowed(ask(world(b.grant("g1", "alice"), b.member("devs", "alice"), switch)), "g1")


def test_kubectl_switch_back_on() -> None:
    state = world(
        b.grant("g1", "alice"), b.kubectl_off("cluster", "dev"), b.kubectl_on("cluster", "dev", 1)
    )
    allowed(ask(state), "g1")
    # a global switch ignores whatever target the event carries
    state = world(b.grant("g1", "alice"), b.kubectl_off("global", "x"), b.kubectl_on("global", "y"))
    allowed(ask(state), "g1")


def test_leaving_a_group_lifts_its_switch() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.member("devs", "alice"),
        b.kubectl_off("group", "devs"),
        b.unmember("devs", "alice", 1),
    )
    allowed(ask(state), "g1")
    state = world(
        b.grant("g1", "alice"),
        b.idp("alice", "sre", t=0),
        b.kubectl_off("group", "sre"),
        b.idp("alice", "web", t=1),  # the IdP set is replaced, not merged
    )
    allowed(ask(state), "g1")


@pytest.mark.parametrize(
    "switch",
    [
        b.browser_only("global"),
        b.browser_only("user", "alice"),
        b.browser_only("group", "devs"),
        b.browser_only("cluster", "dev"),
    ],
)
def test_browser_only_refuses_cli_not_browser(switch: object) -> None:
    state = world(
        b.grant("g1", "alice"), b.member("devs", "alice"), b.session("s1", "alice", 50), switch
    )
    denied(ask(state), "browser-only", 403, "browser shell")
    allowed(ask(state, via="browser", session="s1"), "g1")


def test_browser_only_lifted() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.browser_only("user", "alice"),
        b.browser_only("user", "alice", on=False),
    )
    allowed(ask(state), "g1")


def test_console_session_required() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.console_required("group", "devs"),
        b.member("devs", "alice"),
        b.session("s1", "alice", t=40, expires=70, idle_s=3600),
    )
    denied(ask(state, now=39), "console-session-required", 403, "console")
    allowed(ask(state, now=40), "g1")
    allowed(ask(state, now=at(70) - US), "g1")
    denied(ask(state, now=70), "console-session-required")
    state.apply(b.session_ended("s1", "alice", 50))
    denied(ask(state, now=55), "console-session-required")


def test_console_session_required_ignores_sessions_before_revocation() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.console_required("global"),
        b.session("s1", "alice", t=10),
        b.revoked("alice", t=20),
        b.enabled("alice", t=21),
        b.cert("c-3", "alice", t=22),
    )
    denied(ask(state, serial="c-3", not_before=at(22), now=30), "console-session-required")
    state.apply(b.session("s2", "alice", t=25))
    allowed(ask(state, serial="c-3", not_before=at(22), now=30), "g1")


def test_console_session_of_someone_else_does_not_count() -> None:
    state = world(b.grant("g1", "alice"), b.console_required("global"), b.session("s1", "bob", 50))
    denied(ask(state), "console-session-required")


# --- grants: subjects, time windows, modes, namespaces, rules ------------------------------


def test_grant_through_local_and_idp_groups() -> None:
    allowed(ask(world(b.grant("g1", "devs", kind="group"), b.member("devs", "alice"))), "g1")
    allowed(ask(world(b.grant("g1", "sre", kind="group"), b.idp("alice", "sre"))), "g1")
    assert not ask(world(b.grant("g1", "devs", kind="group"))).allowed
    # a user grant does not reach a group of the same name, nor the reverse
    assert not ask(world(b.grant("g1", "alice", kind="group"))).allowed


def test_deleted_group_loses_its_members() -> None:
    state = world(
        b.grant("g1", "devs", kind="group"), b.member("devs", "alice"), b.group_deleted("devs", 1)
    )
    assert not ask(state).allowed


def test_time_window_edges() -> None:
    state = world(b.grant("g-12", "alice", nb=30, exp=90))
    denied(ask(state, now=at(30) - US), "grant-not-yet-valid", 403, "g-12", "valid from")
    allowed(ask(state, now=30), "g-12")
    allowed(ask(state, now=at(90) - US), "g-12")
    denied(ask(state, now=90), "grant-expired", 403, "grant g-12 expired at 2026-03-01T13:30:00Z")


def test_grant_expired_event_ends_a_grant_early_but_never_extends_it() -> None:
    state = world(b.grant("g1", "alice", exp=90), b.grant_expired("g1", when=50, t=50))
    denied(ask(state, now=60), "grant-expired")
    state = world(b.grant("g1", "alice", exp=40), b.grant_expired("g1", when=50, t=50))
    denied(ask(state, now=45), "grant-expired")


def test_revoked_grant() -> None:
    state = world(b.grant("g1", "alice"), b.grant_revoked("g1", t=10))
    denied(ask(state), "grant-revoked", 403, "g1", "revoked at")


def test_reissued_grant_replaces_the_old_one() -> None:
    state = world(
        b.grant("g1", "alice", clusters=("dev",)), b.grant("g1", "alice", clusters=("prod",))
    )
    assert not ask(state, cluster="dev").allowed


@pytest.mark.parametrize(
    ("mode", "via", "ok"),
    [
        ("both", "cli", True),
        ("both", "browser", True),
        ("cli", "cli", True),
        ("cli", "browser", False),
        ("browser", "cli", False),
        ("browser", "browser", True),
    ],
)
def test_access_mode(mode: str, via: str, ok: bool) -> None:
    state = world(b.grant("g1", "alice", mode=mode), b.session("s1", "alice", 50))
    d = ask(state, via=via, session="s1")
    assert d.allowed is ok, d
    if not ok:
        denied(d, "grant-mode", 403, "only through")


@pytest.mark.parametrize(
    ("namespaces", "method", "path", "ok"),
    [
        ((), "GET", PODS, True),
        (("*",), "GET", "/api/v1/pods", True),
        ((), "GET", "/api/v1/pods", True),
        (("shop",), "GET", PODS, True),
        (("shop",), "GET", "/api/v1/namespaces/other/pods", False),
        (("shop",), "GET", "/api/v1/pods", False),  # all namespaces needs an all-ns grant
        (("shop",), "GET", "/api/v1/namespaces/shop", True),  # the namespace object itself
        (("shop",), "GET", "/api/v1/namespaces", False),
        (("shop", "*"), "GET", "/api/v1/namespaces", True),
    ],
)
def test_namespaces(namespaces: tuple, method: str, path: str, ok: bool) -> None:
    d = ask(world(b.grant("g1", "alice", namespaces=namespaces)), method=method, path=path)
    assert d.allowed is ok, d


def test_cluster_scoped_resources_need_an_all_namespace_grant() -> None:
    nodes = "/api/v1/nodes"
    assert not ask(
        world(b.grant("g1", "alice", "cluster-admin", namespaces=("shop",))), path=nodes
    ).allowed
    allowed(ask(world(b.grant("g1", "alice", "cluster-admin")), path=nodes), "g1")


def test_custom_rules() -> None:
    rules = (Rule(verbs=("get", "list"), resources=("pods",), resource_names=("web-1",)),)
    state = world(b.grant("g1", "alice", "custom", rules=rules))
    allowed(ask(state, path=f"{PODS}/web-1"), "g1")
    denied(ask(state, path=f"{PODS}/web-2"), "no-grant")
    denied(ask(state), "no-grant")  # a list has no name
    allowed(ask(state, query="fieldSelector=metadata.name%3Dweb-1"), "g1")


def test_unknown_role_allows_nothing() -> None:
    denied(ask(world(b.grant("g1", "alice", "superuser"))), "no-grant")


def test_view_edit_admin_through_decide() -> None:
    secrets = "/api/v1/namespaces/shop/secrets"
    roles_ = "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles"
    exec_ = f"{PODS}/web-1/exec"
    for role, secret_ok, exec_ok, roles_ok in [
        ("view", False, False, False),
        ("edit", True, True, False),
        ("admin", True, True, True),
    ]:
        state = world(b.grant("g1", "alice", role, namespaces=("shop",)))
        assert ask(state, path=secrets).allowed is secret_ok, role
        assert ask(state, path=exec_, query="command=sh").allowed is exec_ok, role
        assert ask(state, method="POST", path=roles_).allowed is roles_ok, role


def test_smallest_grant_id_wins_and_groups_count() -> None:
    state = world(
        b.grant("g9", "alice"),
        b.grant("g3", "devs", kind="group"),
        b.grant("g5", "alice", exp=30),  # expired: does not count
        b.member("devs", "alice"),
    )
    allowed(ask(state), "g3")


# --- non-resource requests ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/version", "/api", "/apis", "/apis/apps/v1", "/openapi/v3"])
def test_discovery_needs_any_active_grant(path: str) -> None:
    allowed(ask(world(b.grant("g1", "alice", namespaces=("shop",))), path=path), "g1")
    denied(ask(world(), path=path), "no-grant")
    denied(ask(world(b.grant("g1", "alice", exp=30)), path=path), "grant-expired")
    assert not ask(world(b.grant("g1", "alice", clusters=("prod",))), path=path).allowed


@pytest.mark.parametrize(
    "path",
    [
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
    ],
)
def test_asking_about_oneself_needs_any_active_grant(path: str) -> None:
    """`kubectl auth whoami` / `auth can-i` work for anyone who may use the cluster at all."""
    state = world(b.grant("g1", "alice", "view", namespaces=("shop",)))
    allowed(ask(state, method="POST", path=path), "g1")
    denied(ask(world(), method="POST", path=path), "no-grant")
    assert not ask(
        state, method="POST", path="/apis/authorization.k8s.io/v1/subjectaccessreviews"
    ).allowed


def test_other_non_resource_urls_need_a_cluster_wide_rule() -> None:
    assert not ask(world(b.grant("g1", "alice", "admin")), path="/metrics").allowed
    allowed(ask(world(b.grant("g1", "alice", "cluster-admin")), path="/metrics"), "g1")
    state = world(b.grant("g1", "alice", "cluster-admin", namespaces=("shop",)))
    assert not ask(state, path="/metrics").allowed
    rules = (Rule(verbs=("get",), api_groups=(), non_resource_urls=("/metrics",)),)
    allowed(ask(world(b.grant("g1", "alice", "custom", rules=rules)), path="/metrics"), "g1")


# --- sensitive clusters and break-glass ----------------------------------------------------


def _bg_world(*extra: object) -> PolicyState:
    return world(
        b.grant("g-view", "alice", "edit", clusters=("prod",)),
        b.bg_requested("bg-1", "alice", "prod", t=10, duration_s=1800),
        b.bg_approved("bg-1", "bob", "g-bg", t=12),
        b.grant("g-bg", "alice", "cluster-admin", clusters=("prod",), nb=12, exp=42,
                breakglass_id="bg-1"),
        *extra,
    )  # fmt: skip


def test_sensitive_cluster_standing_grants_read_only() -> None:
    state = world(b.grant("g1", "alice", "edit", clusters=("prod",)))
    allowed(ask(state, cluster="prod"), "g1")
    allowed(ask(state, cluster="prod", query="watch=1"), "g1")
    allowed(ask(state, cluster="prod", path=f"{PODS}/web-1/log"), "g1")
    d = ask(state, cluster="prod", method="DELETE", path=f"{PODS}/web-1")
    denied(
        d, "breakglass-required", 403, "cluster prod is sensitive", "allow only get, list and watch"
    )
    denied(ask(state, cluster="prod", path=f"{PODS}/web-1/exec"), "breakglass-required")


def test_standing_access_none() -> None:
    state = world(
        b.grant("g1", "alice", "edit", clusters=("prod",)),
        b.setting(breakglass__standing_access="none"),
    )
    denied(ask(state, cluster="prod"), "breakglass-required", 403, "standing access is disabled")
    denied(ask(state, cluster="prod", path="/version"), "breakglass-required")
    # an unknown value is read as `none`, the safer choice
    state = world(
        b.grant("g1", "alice", "edit", clusters=("prod",)),
        b.setting(breakglass__standing_access="all"),
    )
    denied(ask(state, cluster="prod"), "breakglass-required")


def test_breakglass_grant_allows_writes_within_its_window() -> None:
    state = _bg_world()
    delete = {"cluster": "prod", "method": "DELETE", "path": f"{PODS}/web-1"}
    denied(ask(state, now=at(12) - US, **delete), "breakglass-required")
    d = ask(state, now=12, **delete)
    allowed(d, "g-bg")
    assert (d.breakglass_id, d.code) == ("bg-1", "allowed-breakglass")
    allowed(ask(state, now=at(42) - US, **delete), "g-bg")
    denied(ask(state, now=42, **delete), "breakglass-required")


def test_standing_grant_preferred_for_reads_on_sensitive_cluster() -> None:
    d = ask(_bg_world(), cluster="prod", now=20)
    allowed(d, "g-view")
    assert d.breakglass_id == ""


def test_breakglass_grant_without_an_approval_is_only_standing() -> None:
    forged = b.grant("g-x", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-404")
    d = ask(world(forged), cluster="prod", method="DELETE", path=f"{PODS}/web-1")
    denied(d, "breakglass-required")
    allowed(ask(world(forged), cluster="prod"), "g-x")  # still a standing grant for reads


@pytest.mark.parametrize(
    "tamper",
    [
        # approval names another grant
        [b.bg_requested("bg-2", "alice", "prod"), b.bg_approved("bg-2", "bob", "other"),
         b.grant("g-bg", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-2")],
        # request for another cluster
        [b.cluster("prod2", sensitive="true"), b.bg_requested("bg-2", "alice", "dev"),
         b.bg_approved("bg-2", "bob", "g-bg"),
         b.grant("g-bg", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-2")],
        # grant to someone other than the requester
        [b.bg_requested("bg-2", "bob", "prod"), b.bg_approved("bg-2", "carol", "g-bg"),
         b.grant("g-bg", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-2")],
        # denied, then an approval arrives: the first decision stands
        [b.bg_requested("bg-2", "alice", "prod"), b.bg_denied("bg-2", "bob"),
         b.bg_approved("bg-2", "bob", "g-bg"),
         b.grant("g-bg", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-2")],
    ],
)  # fmt: skip
def test_breakglass_must_match_its_approved_request(tamper: list) -> None:
    d = ask(world(*tamper), cluster="prod", method="DELETE", path=f"{PODS}/web-1")
    denied(d, "breakglass-required")


def test_breakglass_grant_on_a_normal_cluster_reports_its_request() -> None:
    state = world(
        b.bg_requested("bg-1", "alice", "dev"),
        b.bg_approved("bg-1", "bob", "g-bg"),
        b.grant("g-bg", "alice", "edit", clusters=("dev",), breakglass_id="bg-1"),
    )
    d = ask(state, method="DELETE", path=f"{PODS}/web-1")
    assert (d.allowed, d.grant_id, d.breakglass_id) == (True, "g-bg", "bg-1")


def test_sensitive_label_can_be_set_later() -> None:
    state = world(b.grant("g1", "alice", "edit", clusters=("dev",)))
    allowed(ask(state, method="DELETE", path=f"{PODS}/web-1"), "g1")
    state.apply(b.labels("dev", t=1, sensitive="true"))
    denied(ask(state, method="DELETE", path=f"{PODS}/web-1"), "breakglass-required")


# --- ordering of checks -------------------------------------------------------------------


def test_credential_before_disabled_before_cluster_before_switches() -> None:
    state = world(
        b.grant("g1", "alice"),
        b.disabled("alice", 1),
        b.kubectl_off("global"),
        b.cert_revoked("c-alice", "alice", 2),
    )
    denied(ask(state, cluster="nowhere"), "certificate-revoked", 401)
    state = world(b.grant("g1", "alice"), b.disabled("alice", 1), b.kubectl_off("global"))
    denied(ask(state, cluster="nowhere"), "user-disabled")
    state = world(b.grant("g1", "alice"), b.kubectl_off("global"))
    denied(ask(state, cluster="nowhere"), "unknown-cluster")
    state = world(b.kubectl_off("global"), b.browser_only("global"))
    denied(ask(state), "kubectl-disabled")
