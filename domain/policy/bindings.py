"""The JIT RBAC plan for a relay: the objects that make cluster RBAC enforce a user's grants.

The relay forwards a user's requests with a token of a service account it made for that user
(name and namespace passed in). `binding_plan` lists, as plain dicts shaped like the Kubernetes
objects, what that service account needs so the API server allows exactly what kubegate's edge
allows - defense in depth, the same grants checked twice:

- the grants of the user (direct or through any group) on this cluster that are active at
  `now`, in any access mode (one service account serves the kubeconfig and the browser shell;
  the edge tells the two apart);
- nothing at all when the edge would refuse the user everywhere on this cluster: unknown or
  disabled user, unknown cluster, kubectl switched off globally, for the cluster, the user or
  one of the user's groups;
- on a `sensitive=true` cluster, standing grants are cut to get/list/watch (or dropped when
  `breakglass.standing_access` is `none`); a valid break-glass grant keeps its whole role.

Roles are kubegate's own ClusterRoles holding exactly kubegate's rules, not the cluster's
`view`/`edit`/`admin`: those are aggregated with CRD rules at run time and differ by version, so
binding them would make the second check disagree with the first. Built-in roles are shared
ClusterRoles (`kubegate:view`, `kubegate:edit:read-only`, ...); custom rules get one ClusterRole
per grant (`kubegate:grant:<grant>-<hash>`). A grant for all namespaces becomes a
ClusterRoleBinding; a namespaced grant a RoleBinding in each of its namespaces (referencing the
ClusterRole, as Kubernetes allows). Tunnel subresources are rewritten so that API servers
that check the method's verb for them agree with the edge (`cluster_rules`). Names are
deterministic, so re-planning is idempotent and
the relay can diff what exists against the plan by the owner label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from domain.events import Rule
from domain.policy import roles
from domain.policy.attributes import TUNNEL_SUBRESOURCES
from domain.policy.decide import applicable_switch
from domain.policy.rules import read_only
from domain.policy.state import GrantRecord, PolicyState, require_aware

RBAC_API = "rbac.authorization.k8s.io"
RBAC_VERSION = f"{RBAC_API}/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubegate"}
OWNER_LABEL = "kubegate.io/owner"
GRANT_LABEL = "kubegate.io/grant"

Object = dict[str, Any]


class BindingPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What the relay should make exist for one user's service account on one cluster."""

    user: str
    cluster: str
    service_account: Object
    grant_ids: tuple[str, ...] = ()
    cluster_roles: tuple[Object, ...] = ()
    cluster_role_bindings: tuple[Object, ...] = ()
    role_bindings: tuple[Object, ...] = ()

    def objects(self) -> list[Object]:
        """Everything, in the order to apply it (roles before what binds them)."""
        return [*self.cluster_roles, *self.cluster_role_bindings, *self.role_bindings]

    def binding_names(self) -> tuple[str, ...]:
        """`ClusterRoleBinding/<name>` and `RoleBinding/<ns>/<name>`, as recorded in
        `ServiceAccountProvisioned.bindings`."""
        crbs = [f"ClusterRoleBinding/{o['metadata']['name']}" for o in self.cluster_role_bindings]
        rbs = [
            f"RoleBinding/{o['metadata']['namespace']}/{o['metadata']['name']}"
            for o in self.role_bindings
        ]
        return (*crbs, *rbs)


def _digest(*parts: str, size: int = 10) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:size]


_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def _slug(text: str, limit: int) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-.")[:limit].strip("-.") or "x"


def owner_label(sa_namespace: str, sa_name: str) -> str:
    """The value of `kubegate.io/owner` on every binding made for one service account."""
    return _digest(sa_namespace, sa_name, size=16)


def _rule_dicts(rules: Iterable[Rule]) -> list[Object]:
    out: list[Object] = []
    for rule in rules:
        if rule.resources:
            item: Object = {
                "apiGroups": list(rule.api_groups),
                "resources": list(rule.resources),
                "verbs": list(rule.verbs),
            }
            if rule.resource_names:
                item["resourceNames"] = list(rule.resource_names)
            out.append(item)
        if rule.non_resource_urls:
            out.append({"nonResourceURLs": list(rule.non_resource_urls), "verbs": list(rule.verbs)})
    return out


def _is_tunnel(resource: str) -> bool:
    return resource.partition("/")[2] in TUNNEL_SUBRESOURCES


def cluster_rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """Rules rewritten so the API server's verbs for tunnels match the edge's.

    The edge treats exec/attach/portforward/proxy as `create` whatever the method; API
    servers check `create` (or, before 1.35 for WebSocket exec and always for proxy, the
    method's verb, `get`). So on tunnel subresources the cluster gets `create` and `get`
    where the rule holds `create`, and nothing where it does not - a read-only rule that
    names `pods/exec` must not let an older API server accept a GET upgrade.

    Known gap: RBAC cannot say "every resource but tunnels", so a rule on resources `*` cut
    to read-only (a standing cluster-admin grant on a sensitive cluster) still lets such an
    API server accept `get` on `pods/exec` or `nodes/proxy`; only the edge refuses those then.
    """
    out: list[Rule] = []
    for rule in rules:
        tunnels = tuple(r for r in rule.resources if _is_tunnel(r))
        if not tunnels:
            out.append(rule)
            continue
        plain = tuple(r for r in rule.resources if not _is_tunnel(r))
        if plain or rule.non_resource_urls:
            out.append(msgspec.structs.replace(rule, resources=plain))
        if "*" in rule.verbs or "create" in rule.verbs:
            verbs = ("*",) if "*" in rule.verbs else ("create", "get")
            out.append(msgspec.structs.replace(rule, verbs=verbs, resources=tunnels,
                                               non_resource_urls=()))  # fmt: skip
    return tuple(out)


def _cluster_role(name: str, rules: Iterable[Rule], labels: dict[str, str]) -> Object:
    return {
        "apiVersion": RBAC_VERSION,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**MANAGED_BY, **labels}},
        "rules": _rule_dicts(rules),
    }


def _role_for(grant: GrantRecord, reduced: bool) -> tuple[str, Object]:
    """(ClusterRole name, ClusterRole object) holding the grant's effective rules."""
    suffix = ":read-only" if reduced else ""
    rules = roles.rules_for(grant.role, grant.issued.rules)
    if reduced:
        rules = read_only(rules)
    rules = cluster_rules(rules)
    if grant.role in roles.BUILTIN_ROLES:
        name = f"kubegate:{grant.role}{suffix}"
        return name, _cluster_role(name, rules, {})
    name = f"kubegate:grant:{_slug(grant.grant_id, 60)}-{_digest(grant.grant_id)}{suffix}"
    return name, _cluster_role(name, rules, {GRANT_LABEL: _digest(grant.grant_id, size=16)})


def _binding(
    kind: str,
    name: str,
    namespace: str | None,
    role: str,
    subject: Object,
    owner: str,
    annotations: dict[str, str],
) -> Object:
    metadata: Object = {
        "name": name,
        "labels": {**MANAGED_BY, OWNER_LABEL: owner},
        "annotations": annotations,
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": RBAC_VERSION,
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def effective_grants(
    state: PolicyState, user: str, cluster: str, now: datetime
) -> list[tuple[GrantRecord, bool]]:
    """(grant, cut to read-only) for every grant the cluster should enforce, by grant id.

    Empty when the edge would refuse the user on this cluster whatever the request.
    """
    require_aware(now, "now")
    record = state.users.get(user)
    target = state.clusters.get(cluster)
    if record is None or not record.enabled or target is None:
        return []
    groups = sorted(state.groups_of(user))
    if applicable_switch(state.kubectl_disabled, cluster, user, groups) is not None:
        return []
    standing_none = state.settings.standing_access != "read-only"
    chosen: dict[str, tuple[GrantRecord, bool]] = {}
    for subject in state.subjects_of(user):
        for grant in state.grants_on(subject, target):
            if not grant.active_at(now):
                continue
            breakglass = state.valid_breakglass(grant, cluster) is not None
            if target.sensitive and not breakglass:
                if standing_none:
                    continue
                chosen[grant.grant_id] = (grant, True)
            else:
                chosen[grant.grant_id] = (grant, False)
    return [chosen[k] for k in sorted(chosen)]


def binding_plan(
    state: PolicyState,
    user: str,
    cluster: str,
    now: datetime,
    *,
    sa_name: str,
    sa_namespace: str,
) -> BindingPlan:
    """The RBAC objects mirroring `user`'s grants on `cluster` at `now` for one service
    account. Re-plan at `state.next_deadline(now)` and after every policy event."""
    subject = {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}
    owner = owner_label(sa_namespace, sa_name)
    roles_by_name: dict[str, Object] = {}
    crbs: list[Object] = []
    rbs: list[Object] = []
    grant_ids: list[str] = []
    for grant, reduced in effective_grants(state, user, cluster, now):
        role_name, role = _role_for(grant, reduced)
        if not role["rules"]:
            continue
        roles_by_name[role_name] = role
        grant_ids.append(grant.grant_id)
        annotations = {"kubegate.io/user": user, "kubegate.io/grant-id": grant.grant_id}
        if grant.expires_at is not None:
            annotations["kubegate.io/expires-at"] = grant.expires_at.isoformat()
        if grant.breakglass_id and not reduced:
            annotations["kubegate.io/breakglass-id"] = grant.breakglass_id
        name = (
            f"kubegate-{_slug(user, 40)}-{_slug(grant.grant_id, 60)}-"
            f"{_digest(sa_namespace, sa_name, grant.grant_id)}"
        )
        if grant.all_namespaces:
            crbs.append(
                _binding("ClusterRoleBinding", name, None, role_name, subject, owner, annotations)
            )
        else:
            for namespace in sorted(grant.namespaces):
                rbs.append(
                    _binding("RoleBinding", name, namespace, role_name, subject, owner, annotations)
                )
    return BindingPlan(
        user=user,
        cluster=cluster,
        service_account={
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": sa_name,
                "namespace": sa_namespace,
                "labels": {**MANAGED_BY, OWNER_LABEL: owner},
                "annotations": {"kubegate.io/user": user},
            },
        },
        grant_ids=tuple(grant_ids),
        cluster_roles=tuple(roles_by_name[k] for k in sorted(roles_by_name)),
        cluster_role_bindings=tuple(crbs),
        role_bindings=tuple(rbs),
    )
