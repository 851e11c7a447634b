"""Rough decide() throughput with 10k grants: `python -m tests.domain.bench_decide`.

Prints one JSON line. Not a test (no timing assertions); ops' `kubegate bench` can wrap it.
World: 2,000 users in 200 groups (3 each, plus an IdP group), 50 clusters (5 sensitive),
10,000 grants (60% to users, 40% to groups; by name, `*` or label selector; mixed roles,
namespaces and windows), then a mix of allowed and denied requests through `decide`.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta

from domain import events as ev
from domain.policy.attributes import attributes_from_http
from domain.policy.decide import Caller, decide
from domain.policy.state import PolicyState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build(seed: int = 7, users: int = 2000, groups: int = 200, clusters: int = 50,
          grants: int = 10_000) -> PolicyState:  # fmt: skip
    rnd = random.Random(seed)
    n = iter(range(10**9))

    def env() -> dict:
        return {"id": f"e{next(n)}", "time": T0, "actor": "bench"}

    events: list[object] = []
    for c in range(clusters):
        labels = {"env": rnd.choice(["dev", "stage", "prod"]), "team": f"t{c % 10}"}
        if c % 10 == 0:
            labels["sensitive"] = "true"
        events.append(ev.ClusterRegistered(**env(), cluster=f"c{c}", labels=labels))
    for u in range(users):
        events.append(ev.UserRegistered(**env(), user=f"u{u}"))
        events.append(ev.CertificateIssued(**env(), serial=f"s{u}", user=f"u{u}", not_before=T0,
                                           not_after=T0 + timedelta(days=30)))  # fmt: skip
        for g in rnd.sample(range(groups), 3):
            events.append(ev.MemberAdded(**env(), group=f"g{g}", user=f"u{u}"))
        events.append(ev.IdpGroupsSynced(**env(), user=f"u{u}", issuer="i",
                                         groups=(f"idp{u % 20}",)))  # fmt: skip
    for i in range(grants):
        to_user = rnd.random() < 0.6
        how = rnd.random()
        if how < 0.8:
            where: dict = {"clusters": (f"c{rnd.randrange(clusters)}",)}
        elif how < 0.9:
            where = {"clusters": ("*",)}
        else:
            where = {"cluster_selector": {"env": rnd.choice(["dev", "prod"])}}
        nb = None if rnd.random() < 0.8 else T0 + timedelta(hours=rnd.randrange(48))
        exp = None if rnd.random() < 0.5 else T0 + timedelta(hours=rnd.randrange(1, 96))
        events.append(
            ev.GrantIssued(
                **env(),
                grant_id=f"gr{i:05d}",
                subject_kind="user" if to_user else "group",
                subject=f"u{rnd.randrange(users)}" if to_user else f"g{rnd.randrange(groups)}",
                role=rnd.choice(["view", "view", "edit", "admin", "cluster-admin"]),
                namespaces=rnd.choice([(), ("shop",), ("shop", "cart"), ("ops",)]),
                not_before=nb,
                expires_at=exp,
                **where,
            )
        )
    return PolicyState().apply_all(events)


REQUESTS = [
    ("GET", "/api/v1/namespaces/shop/pods", ""),
    ("GET", "/api/v1/namespaces/shop/pods/web-1", ""),
    ("GET", "/api/v1/namespaces/cart/pods", "watch=1"),
    ("DELETE", "/api/v1/namespaces/shop/pods/web-1", ""),
    ("GET", "/api/v1/namespaces/shop/pods/web-1/exec", "command=sh"),
    ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", ""),
    ("GET", "/api/v1/namespaces/ops/secrets", ""),
    ("GET", "/api/v1/nodes", ""),
    ("GET", "/apis/apps/v1", ""),
    ("GET", "/version", ""),
]


def main() -> None:
    started = time.perf_counter()
    state = build()
    fold_s = time.perf_counter() - started
    rnd = random.Random(11)
    attrs = [attributes_from_http(*r) for r in REQUESTS]
    now = T0 + timedelta(hours=24)
    asks = []
    for _ in range(20_000):
        u = rnd.randrange(2000)
        asks.append((Caller(user=f"u{u}", cert_serial=f"s{u}", cert_not_before=T0),
                     f"c{rnd.randrange(50)}", rnd.choice(attrs)))  # fmt: skip
    allowed = 0
    started = time.perf_counter()
    for caller, cluster, a in asks:
        allowed += decide(state, caller, cluster, a, now).allowed
    cold_s = time.perf_counter() - started  # most (user, cluster) pairs seen for the first time
    started = time.perf_counter()
    for caller, cluster, a in asks:
        decide(state, caller, cluster, a, now)
    warm_s = time.perf_counter() - started
    parse_started = time.perf_counter()
    for _ in range(2000):
        for r in REQUESTS:
            attributes_from_http(*r)
    parse_s = time.perf_counter() - parse_started
    print(json.dumps({
        "grants": len(state.grants),
        "events_folded": state.events_applied,
        "fold_s": round(fold_s, 2),
        "decisions": len(asks),
        "allowed": allowed,
        "decisions_per_s_cold": round(len(asks) / cold_s),
        "decisions_per_s_warm": round(len(asks) / warm_s),
        "attributes_per_s": round(2000 * len(REQUESTS) / parse_s),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
