"""RBAC authorization with Kubernetes' rule semantics, over the roles and bindings in the store.

Evaluation follows kube-apiserver's RBAC authorizer: cluster role bindings apply everywhere, role
bindings only in their namespace (to a Role there or to a ClusterRole); rules match on verbs,
apiGroups, resources ("*", "resource/subresource", "*/subresource"), resourceNames and
nonResourceURLs (exact or with a trailing "*"). Members of system:masters are always allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ops.sim.authn import UserInfo
from ops.sim.store import Store

Rule = dict[str, Any]

ROLES = "rbac.authorization.k8s.io/roles"
CLUSTER_ROLES = "rbac.authorization.k8s.io/clusterroles"
ROLE_BINDINGS = "rbac.authorization.k8s.io/rolebindings"
CLUSTER_ROLE_BINDINGS = "rbac.authorization.k8s.io/clusterrolebindings"
MASTERS = "system:masters"


@dataclass(frozen=True)
class Attributes:
    user: UserInfo
    verb: str
    is_resource: bool
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


def _has(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for candidate in rule.get("resources") or []:
        if candidate in ("*", combined):
            return True
        if subresource and candidate == f"*/{subresource}":
            return True
    return False


def _path_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(rule: Rule, attrs: Attributes) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.is_resource:
        return _path_matches(rule, attrs.path)
    if not _has(rule.get("apiGroups"), attrs.api_group):
        return False
    if not _resource_matches(rule, attrs.resource, attrs.subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def subject_matches(subject: dict[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return user.username == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{namespace}:{name}"
    return False


def forbidden_reason(attrs: Attributes) -> str:
    """The sentence kube-apiserver puts after "is forbidden: "."""
    who = f'User "{attrs.user.username}"'
    if not attrs.is_resource:
        return f'{who} cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if attrs.namespace:
        return (
            f'{who} cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
            f'in the namespace "{attrs.namespace}"'
        )
    return (
        f'{who} cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
        "at the cluster scope"
    )


@dataclass(frozen=True)
class Grant:
    """Where a set of rules came from, for allow reasons."""

    binding_kind: str
    binding_name: str
    binding_namespace: str
    role_kind: str
    role_name: str
    rules: tuple[Rule, ...]


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _role_rules(self, kind: str, name: str, namespace: str) -> list[Rule]:
        if kind == "ClusterRole":
            role = self._store.get(CLUSTER_ROLES, ("", name))
        elif kind == "Role":
            role = self._store.get(ROLES, (namespace, name))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def grants(self, user: UserInfo, namespace: str) -> Iterator[Grant]:
        """Every bound set of rules that applies to `user` in `namespace` ("" = cluster scope)."""
        for binding in self._store.items(CLUSTER_ROLE_BINDINGS):
            if any(subject_matches(s, user, "") for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                yield Grant(
                    "ClusterRoleBinding",
                    binding["metadata"]["name"],
                    "",
                    ref.get("kind", ""),
                    ref.get("name", ""),
                    tuple(self._role_rules(ref.get("kind", ""), ref.get("name", ""), "")),
                )
        if not namespace:
            return
        for binding in self._store.items(ROLE_BINDINGS, namespace):
            if any(subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                yield Grant(
                    "RoleBinding",
                    binding["metadata"]["name"],
                    namespace,
                    ref.get("kind", ""),
                    ref.get("name", ""),
                    tuple(self._role_rules(ref.get("kind", ""), ref.get("name", ""), namespace)),
                )

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason); the reason names the binding that allowed it."""
        if MASTERS in attrs.user.groups:
            return True, ""
        for grant in self.grants(attrs.user, attrs.namespace):
            if any(rule_allows(rule, attrs) for rule in grant.rules):
                ns = f' in namespace "{grant.binding_namespace}"' if grant.binding_namespace else ""
                who = attrs.user.username
                return True, (
                    f'RBAC: allowed by {grant.binding_kind} "{grant.binding_name}"{ns} of '
                    f'{grant.role_kind} "{grant.role_name}" to User "{who}"'
                )
        return False, ""

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Rule], list[Rule]]:
        """(resource rules, non-resource rules) for SelfSubjectRulesReview."""
        if MASTERS in user.groups:
            return (
                [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            )
        resource_rules: list[Rule] = []
        non_resource: list[Rule] = []
        for grant in self.grants(user, namespace):
            for rule in grant.rules:
                if rule.get("nonResourceURLs"):
                    non_resource.append(
                        {
                            "verbs": rule.get("verbs") or [],
                            "nonResourceURLs": rule["nonResourceURLs"],
                        }
                    )
                else:
                    out = {
                        "verbs": rule.get("verbs") or [],
                        "apiGroups": rule.get("apiGroups") or [],
                        "resources": rule.get("resources") or [],
                    }
                    if rule.get("resourceNames"):
                        out["resourceNames"] = rule["resourceNames"]
                    resource_rules.append(out)
        return resource_rules, non_resource

    def covers(self, user: UserInfo, namespace: str, rules: list[Rule]) -> list[Rule]:
        """The rules (from a role being created or bound) that `user` does not hold itself.

        RBAC forbids granting what you do not have (escalation) unless you may `escalate`/`bind`.
        """
        if MASTERS in user.groups:
            return []
        missing: list[Rule] = []
        for rule in rules:
            if not self._rule_covered(user, namespace, rule):
                missing.append(rule)
        return missing

    def _rule_covered(self, user: UserInfo, namespace: str, rule: Rule) -> bool:
        verbs = rule.get("verbs") or []
        if rule.get("nonResourceURLs"):
            return all(
                self.authorize(Attributes(user, v, False, path=p))[0]
                for v in verbs
                for p in rule["nonResourceURLs"]
            )
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                res, _, sub = resource.partition("/")
                for verb in verbs:
                    names = rule.get("resourceNames") or [""]
                    for name in names:
                        attrs = Attributes(user, verb, True, namespace, group, res, sub, name)
                        if not self._covered_exactly(attrs, namespace):
                            return False
        return True

    def _covered_exactly(self, attrs: Attributes, namespace: str) -> bool:
        """Like authorize, but wildcards in the request must be matched by wildcards."""
        if MASTERS in attrs.user.groups:
            return True
        for grant in self.grants(attrs.user, namespace):
            for rule in grant.rules:
                if attrs.verb == "*" and "*" not in (rule.get("verbs") or []):
                    continue
                if attrs.api_group == "*" and "*" not in (rule.get("apiGroups") or []):
                    continue
                if attrs.resource == "*" and "*" not in (rule.get("resources") or []):
                    continue
                if not attrs.name and rule.get("resourceNames"):
                    continue
                if rule_allows(rule, attrs):
                    return True
        return False


RBAC_GROUP = "rbac.authorization.k8s.io"


def _rule_text(rule: Rule) -> str:
    parts = []
    for key, label in (
        ("apiGroups", "APIGroups"),
        ("resources", "Resources"),
        ("resourceNames", "ResourceNames"),
        ("nonResourceURLs", "NonResourceURLs"),
        ("verbs", "Verbs"),
    ):
        if rule.get(key):
            parts.append(f"{label}:[" + " ".join(f'"{v}"' for v in rule[key]) + "]")
    return "{" + ", ".join(parts) + "}"


def escalation_check(authorizer: Authorizer) -> Any:
    """An admission check refusing roles and bindings that grant more than the writer holds,
    unless the writer may `escalate` (roles) or `bind` (the referenced role), as RBAC does."""
    from ops.sim import status

    def check(rt: Any, obj: dict[str, Any], old: dict[str, Any] | None, ctx: Any) -> None:
        if rt.group != RBAC_GROUP or MASTERS in ctx.user.groups:
            return
        namespace = obj["metadata"].get("namespace", "")
        name = obj["metadata"].get("name", "")
        if rt.plural in ("roles", "clusterroles"):
            rules = list(obj.get("rules") or [])
            may = Attributes(ctx.user, "escalate", True, namespace, RBAC_GROUP, rt.plural, "", name)
        elif rt.plural in ("rolebindings", "clusterrolebindings"):
            ref = obj.get("roleRef") or {}
            rules = authorizer._role_rules(ref.get("kind", ""), ref.get("name", ""), namespace)
            plural = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            may = Attributes(
                ctx.user, "bind", True, namespace, RBAC_GROUP, plural, "", ref.get("name", "")
            )
        else:
            return
        if authorizer.authorize(may)[0]:
            return
        missing = authorizer.covers(ctx.user, namespace, rules)
        if not missing:
            return
        groups = " ".join(f'"{g}"' for g in ctx.user.groups)
        raise status.forbidden(
            rt.qualified,
            name,
            f'user "{ctx.user.username}" (groups=[{groups}]) is attempting to grant RBAC '
            "permissions not currently held:\n" + "\n".join(_rule_text(r) for r in missing),
        )

    return check
