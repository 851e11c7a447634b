"""explain(): a user's access per cluster, with sources, switches and requirements."""

from __future__ import annotations

from domain.policy.explain import explain
from domain.policy.state import PolicyState
from tests.domain import builders as b
from tests.domain.builders import at


def world(*events: object) -> PolicyState:
    return PolicyState().apply_all(
        [
            b.user("alice"),
            b.user("bob"),
            b.member("devs", "alice"),
            b.idp("alice", "sre"),
            b.cluster("dev", env="dev"),
            b.cluster("prod", env="prod", sensitive="true"),
            *events,
        ]
    )


def test_unknown_user() -> None:
    e = explain(world(), "zed", at(0))
    assert (e.known, e.clusters) == (False, ())


def test_sources_statuses_and_clusters() -> None:
    state = world(
        b.grant("g-direct", "alice", "view", clusters=("dev",)),
        b.grant("g-local", "devs", "edit", kind="group", clusters=("dev",), namespaces=("shop",)),
        b.grant(
            "g-idp", "sre", "admin", kind="group", clusters=(), cluster_selector={"env": "prod"}
        ),
        b.grant("g-old", "alice", "view", clusters=("dev",), exp=10),
        b.grant("g-later", "alice", "view", clusters=("stage",), nb=120),
        b.grant("g-bob", "bob", "view", clusters=("dev",)),
        b.grant("g-gone", "alice", "view", clusters=("dev",)),
        b.grant_revoked("g-gone", t=1),
    )
    e = explain(state, "alice", at(60))
    assert (e.known, e.enabled, e.status) == (True, True, "enabled")
    assert (e.local_groups, e.idp_groups) == (("devs",), ("sre",))
    assert [c.cluster for c in e.clusters] == ["dev", "prod", "stage"]
    dev, prod, stage = e.clusters
    assert [(g.grant_id, g.source, g.status, g.effect) for g in dev.grants] == [
        ("g-direct", "direct", "active", "full"),
        ("g-local", "group devs", "active", "full"),
        ("g-old", "direct", "expired", "none"),
    ]
    assert dev.grants[1].namespaces == ("shop",)
    assert (dev.kubeconfig_usable, dev.browser_usable, dev.requirements) == (True, True, ())
    (idp,) = prod.grants
    assert (idp.source, idp.effect, prod.sensitive) == ("idp-group sre", "read-only", True)
    assert {v for rule in idp.rules for v in rule.verbs} == {"get", "list", "watch"}
    assert "break-glass" in " ".join(prod.requirements)
    assert (stage.registered, stage.requirements) == (False, ("cluster stage is not registered",))


def test_switches_and_requirements() -> None:
    state = world(
        b.grant("g1", "alice", "view", clusters=("dev",)),
        b.browser_only("group", "devs"),
        b.console_required("global"),
    )
    (dev,) = explain(state, "alice", at(60)).clusters
    assert [(s.kind, s.applies) for s in dev.switches] == [
        ("browser-only", "for group devs"),
        ("console-session-required", "globally"),
    ]
    assert (dev.kubeconfig_usable, dev.browser_usable) == (False, True)
    assert len(dev.requirements) == 2
    state.apply(b.kubectl_off("cluster", "dev", t=1))
    (dev,) = explain(state, "alice", at(60)).clusters
    assert (dev.kubeconfig_usable, dev.browser_usable) == (False, False)
    assert dev.requirements[0] == "kubectl is disabled for cluster dev"


def test_console_session_lifts_the_requirement() -> None:
    state = world(
        b.grant("g1", "alice", "view", clusters=("dev",)), b.console_required("user", "alice")
    )
    assert not explain(state, "alice", at(60)).clusters[0].kubeconfig_usable
    state.apply(b.session("s1", "alice", t=55))
    e = explain(state, "alice", at(60))
    assert (e.live_console_session, e.clusters[0].kubeconfig_usable) == ("s1", True)


def test_breakglass_and_notes() -> None:
    state = world(
        b.bg_requested("bg-1", "alice", "prod", t=1),
        b.bg_approved("bg-1", "bob", "g-bg", t=2),
        b.grant(
            "g-bg", "alice", "cluster-admin", clusters=("prod",), nb=2, exp=32, breakglass_id="bg-1"
        ),
        b.grant("g-fake", "alice", "cluster-admin", clusters=("prod",), breakglass_id="bg-9"),
        b.grant("g-odd", "alice", "root", clusters=("dev",)),
        b.bg_requested("bg-2", "alice", "prod", t=3),
        b.setting(breakglass__standing_access="none"),
    )
    e = explain(state, "alice", at(10))
    dev, prod = e.clusters
    assert "unknown role" in dev.grants[0].note and dev.grants[0].effect == "none"
    bg, fake = prod.grants
    assert (bg.effect, bg.breakglass_id) == ("full", "bg-1")
    assert fake.effect == "none" and "does not match" in fake.note
    assert e.pending_breakglass == ("bg-2",)
    assert explain(state, "alice", at(32)).clusters[1].grants[0].status == "expired"


def test_revoked_user_status() -> None:
    e = explain(world(b.revoked("alice", t=5)), "alice", at(60))
    assert (e.enabled, e.status) == (False, "access revoked at 2026-03-01T12:05:00+00:00")
