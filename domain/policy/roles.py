"""The built-in roles a grant can name, as rule sets close to Kubernetes' bootstrap policy.

Taken from kube-apiserver's bootstrap ClusterRoles (plugin/pkg/auth/authorizer/rbac/
bootstrappolicy, the `system:aggregate-to-{view,edit,admin}` roles), flattened the way
aggregation flattens them, without the rules CRDs aggregate in at run time:

- `view`: read the workload and config objects of a namespace, not secrets, not roles or
  bindings, not exec/attach/port-forward/proxy;
- `edit`: view plus writes to those objects, secrets, exec/attach/port-forward/proxy,
  impersonating service accounts and requesting their tokens; not roles, role bindings or
  resource quotas;
- `admin`: edit plus roles and role bindings and local subject access reviews; bound in a
  namespace it administers that namespace (it still cannot touch the namespace object itself
  or cluster-scoped resources);
- `cluster-admin`: every verb on every resource and every non-resource URL.

`custom` is not a built-in: a grant with `role="custom"` brings its own rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.events import Rule
from domain.policy.rules import RuleSet

_READ = ("get", "list", "watch")
_WRITE = ("create", "delete", "deletecollection", "patch", "update")
_ALL_VERBS = _READ + _WRITE


def _rule(verbs: Iterable[str], groups: Iterable[str], resources: Iterable[str]) -> Rule:
    return Rule(verbs=tuple(verbs), api_groups=tuple(groups), resources=tuple(resources))


_AGGREGATE_TO_VIEW: tuple[Rule, ...] = (
    _rule(
        _READ,
        [""],
        [
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
        ],
    ),
    _rule(
        _READ,
        [""],
        [
            "bindings",
            "events",
            "limitranges",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "replicationcontrollers/status",
            "resourcequotas",
            "resourcequotas/status",
        ],
    ),
    _rule(_READ, [""], ["namespaces"]),
    _rule(_READ, ["discovery.k8s.io"], ["endpointslices"]),
    _rule(
        _READ,
        ["apps"],
        [
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
    ),
    _rule(_READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    _rule(_READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    _rule(
        _READ,
        ["extensions"],
        [
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "ingresses",
            "ingresses/status",
            "networkpolicies",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "replicationcontrollers/scale",
        ],
    ),
    _rule(_READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    _rule(_READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
)

_AGGREGATE_TO_EDIT: tuple[Rule, ...] = (
    _rule(
        _READ,
        [""],
        [
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "secrets",
            "services/proxy",
        ],
    ),
    _rule(["impersonate"], [""], ["serviceaccounts"]),
    _rule(_WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(
        _WRITE,
        [""],
        [
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
        ],
    ),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(
        _WRITE,
        ["apps"],
        [
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        ],
    ),
    _rule(_WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
    _rule(_WRITE, ["batch"], ["cronjobs", "jobs"]),
    _rule(
        _WRITE,
        ["extensions"],
        [
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "ingresses",
            "networkpolicies",
            "replicasets",
            "replicasets/scale",
            "replicationcontrollers/scale",
        ],
    ),
    _rule(_WRITE, ["policy"], ["poddisruptionbudgets"]),
    _rule(_WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
    _rule(_ALL_VERBS, ["coordination.k8s.io"], ["leases"]),
)

_AGGREGATE_TO_ADMIN: tuple[Rule, ...] = (
    _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    _rule(_ALL_VERBS, ["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
)

VIEW: tuple[Rule, ...] = _AGGREGATE_TO_VIEW
EDIT: tuple[Rule, ...] = VIEW + _AGGREGATE_TO_EDIT
ADMIN: tuple[Rule, ...] = EDIT + _AGGREGATE_TO_ADMIN
CLUSTER_ADMIN: tuple[Rule, ...] = (
    Rule(verbs=("*",), api_groups=("*",), resources=("*",)),
    Rule(verbs=("*",), api_groups=(), non_resource_urls=("*",)),
)

BUILTIN_ROLES: dict[str, tuple[Rule, ...]] = {
    "view": VIEW,
    "edit": EDIT,
    "admin": ADMIN,
    "cluster-admin": CLUSTER_ADMIN,
}
"""Role name -> its rules."""

CUSTOM = "custom"

DISCOVERY_RULES: tuple[Rule, ...] = (
    Rule(
        verbs=("get",),
        api_groups=(),
        non_resource_urls=(
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/openapi",
            "/openapi/*",
            "/readyz",
            "/version",
            "/version/",
        ),
    ),
    Rule(
        verbs=("create",),
        api_groups=("authorization.k8s.io",),
        resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
    ),
    Rule(
        verbs=("create",), api_groups=("authentication.k8s.io",), resources=("selfsubjectreviews",)
    ),
)
"""Kubernetes' `system:discovery` and `system:basic-user` roles: what any user with an active
grant on a cluster may do so kubectl can negotiate versions and resources, and ask about itself
(`kubectl auth can-i`, `kubectl auth whoami`)."""

_COMPILED: dict[str, RuleSet] = {name: RuleSet(rules) for name, rules in BUILTIN_ROLES.items()}
DISCOVERY = RuleSet(DISCOVERY_RULES)


def is_known_role(role: str) -> bool:
    return role in BUILTIN_ROLES or role == CUSTOM


def rules_for(role: str, custom: Iterable[Rule] = ()) -> tuple[Rule, ...]:
    """The rules a grant with this role holds; an unknown role holds none."""
    if role == CUSTOM:
        return tuple(custom)
    return BUILTIN_ROLES.get(role, ())


def compiled(role: str, custom: Iterable[Rule] = ()) -> RuleSet:
    """A compiled `RuleSet` for a role (built-ins are compiled once and shared)."""
    builtin = _COMPILED.get(role)
    if builtin is not None:
        return builtin
    return RuleSet(rules_for(role, custom))
