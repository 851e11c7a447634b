"""Built-in roles: what each may and may not do, request by request."""

from __future__ import annotations

import pytest

from domain.events import Rule
from domain.policy import roles
from domain.policy.attributes import attributes_from_http
from domain.policy.rules import check_rule

NS = "/api/v1/namespaces/shop"
APPS = "/apis/apps/v1/namespaces/shop"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/shop"

# (method, path, query, {role: allowed}) ; roles absent from the dict are denied
V, E, A, C = "view", "edit", "admin", "cluster-admin"
TABLE = [
    ("GET", f"{NS}/pods", "", {V, E, A, C}),
    ("GET", f"{NS}/pods", "watch=1", {V, E, A, C}),
    ("GET", f"{NS}/pods/web-1/log", "follow=true", {V, E, A, C}),
    ("GET", f"{NS}/pods/web-1/status", "", {V, E, A, C}),
    ("POST", f"{NS}/pods", "", {E, A, C}),
    ("DELETE", f"{NS}/pods/web-1", "", {E, A, C}),
    ("DELETE", f"{NS}/pods", "", {E, A, C}),
    ("PUT", f"{NS}/pods/web-1/status", "", {C}),
    ("GET", f"{NS}/pods/web-1/exec", "command=sh", {E, A, C}),
    ("POST", f"{NS}/pods/web-1/attach", "", {E, A, C}),
    ("GET", f"{NS}/pods/web-1/portforward", "ports=80", {E, A, C}),
    ("GET", f"{NS}/pods/web-1/proxy/metrics", "", {E, A, C}),
    ("GET", f"{NS}/services/web:80/proxy/", "", {E, A, C}),
    ("POST", f"{NS}/pods/web-1/eviction", "", {E, A, C}),
    ("GET", f"{NS}/secrets", "", {E, A, C}),
    ("GET", f"{NS}/secrets/token", "", {E, A, C}),
    ("PATCH", f"{NS}/secrets/token", "", {E, A, C}),
    ("GET", f"{NS}/configmaps/cfg", "", {V, E, A, C}),
    ("PUT", f"{NS}/configmaps/cfg", "", {E, A, C}),
    ("POST", f"{NS}/serviceaccounts/builder/token", "", {E, A, C}),
    ("GET", f"{NS}/resourcequotas", "", {V, E, A, C}),
    ("PUT", f"{NS}/resourcequotas/q", "", {C}),
    ("GET", f"{NS}/events", "", {V, E, A, C}),
    ("GET", f"{APPS}/deployments", "", {V, E, A, C}),
    ("PATCH", f"{APPS}/deployments/web/scale", "", {E, A, C}),
    ("POST", f"{APPS}/deployments", "", {E, A, C}),
    ("GET", f"{APPS}/controllerrevisions", "", {V, E, A, C}),
    ("DELETE", f"{APPS}/controllerrevisions/r1", "", {C}),
    ("GET", "/apis/batch/v1/namespaces/shop/cronjobs", "", {V, E, A, C}),
    ("POST", "/apis/batch/v1/namespaces/shop/jobs", "", {E, A, C}),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/shop/leases", "", {E, A, C}),
    ("GET", f"{RBAC}/roles", "", {A, C}),
    ("POST", f"{RBAC}/rolebindings", "", {A, C}),
    ("DELETE", f"{RBAC}/roles/r", "", {A, C}),
    ("POST", "/apis/authorization.k8s.io/v1/namespaces/shop/localsubjectaccessreviews", "", {A, C}),
    ("GET", "/api/v1/namespaces/shop", "", {V, E, A, C}),
    ("DELETE", "/api/v1/namespaces/shop", "", {C}),
    ("PUT", "/api/v1/namespaces/shop/finalize", "", {C}),
    ("GET", "/api/v1/nodes", "", {C}),
    ("GET", "/api/v1/nodes/n1/proxy/configz", "", {C}),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "", {C}),
    ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "", {C}),
    ("GET", "/apis/example.com/v1/namespaces/shop/widgets", "", {C}),
    ("GET", "/metrics", "", {C}),
    ("POST", "/logs/x", "", {C}),
]


@pytest.mark.parametrize("case", TABLE, ids=lambda c: f"{c[0]} {c[1]}?{c[2]}")
@pytest.mark.parametrize("role", [V, E, A, C])
def test_builtin_roles(role: str, case: tuple) -> None:
    method, path, query, allowed_for = case
    attrs = attributes_from_http(method, path, query)
    assert roles.compiled(role).allows(attrs) is (role in allowed_for)


def test_roles_nest() -> None:
    assert set(roles.VIEW) <= set(roles.EDIT) <= set(roles.ADMIN)


@pytest.mark.parametrize("role", [V, E, A, C])
def test_builtin_rules_are_valid(role: str) -> None:
    for rule in roles.BUILTIN_ROLES[role]:
        check_rule(rule)


def test_custom_and_unknown_roles() -> None:
    custom = (Rule(verbs=("get",), resources=("pods",)),)
    assert roles.rules_for("custom", custom) == custom
    assert roles.rules_for("view", custom) == roles.VIEW
    assert roles.rules_for("superuser") == ()
    assert not roles.compiled("superuser").allows(attributes_from_http("GET", f"{NS}/pods"))
    assert roles.is_known_role("custom") and not roles.is_known_role("superuser")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/version", True),
        ("GET", "/api", True),
        ("GET", "/apis/apps/v1", True),
        ("GET", "/openapi/v3", True),
        ("GET", "/healthz", True),
        ("HEAD", "/version", False),  # kube's verb for a non-resource HEAD is "head"
        ("GET", "/metrics", False),
        ("GET", "/debug/pprof", False),
        ("POST", "/api", False),
    ],
)
def test_discovery(method: str, path: str, allowed: bool) -> None:
    assert roles.DISCOVERY.allows(attributes_from_http(method, path)) is allowed
