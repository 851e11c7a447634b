"""The catalog of resource types the simulator serves, with their discovery facts.

One `ResourceType` per (group, version, plural); subresources are listed with the kind they
answer with. Nothing here knows HTTP or storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = "v1"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    definition: str
    verbs: tuple[str, ...] = CRUD
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    has_status: bool = False
    has_generation: bool = False
    returns_deleted: bool = False
    storage_key: str = field(default="", compare=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name used in API messages: "pods", "deployments.apps"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


def _status(kind: str, group: str = "", version: str = "v1") -> Subresource:
    return Subresource("status", kind, ("get", "patch", "update"), group, version)


def _scale() -> Subresource:
    return Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1")


CORE = "io.k8s.api.core.v1."
APPS = "io.k8s.api.apps.v1."
RBAC = "io.k8s.api.rbac.v1."
AUTHZ = "io.k8s.api.authorization.v1."
AUTHN = "io.k8s.api.authentication.v1."

_STREAMS = (
    Subresource("attach", "PodAttachOptions", ("create", "get")),
    Subresource("exec", "PodExecOptions", ("create", "get")),
    Subresource("log", "Pod", ("get",)),
    Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
)

TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        False,
        CORE + "Namespace",
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        short_names=("ns",),
        subresources=(
            Subresource("finalize", "Namespace", ("update",)),
            _status("Namespace"),
        ),
        has_status=True,
        returns_deleted=True,
    ),
    ResourceType(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        True,
        CORE + "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=(*_STREAMS, _status("Pod")),
        has_status=True,
        returns_deleted=True,
    ),
    ResourceType(
        "",
        "v1",
        "Service",
        "services",
        "service",
        True,
        CORE + "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=(_status("Service"),),
        has_status=True,
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    ),
    ResourceType(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        True,
        CORE + "ConfigMap",
        short_names=("cm",),
    ),
    ResourceType("", "v1", "Secret", "secrets", "secret", True, CORE + "Secret"),
    ResourceType(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        True,
        CORE + "ServiceAccount",
        short_names=("sa",),
        subresources=(
            Subresource("token", "TokenRequest", ("create",), "authentication.k8s.io", "v1"),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "Event",
        "events",
        "event",
        True,
        CORE + "Event",
        short_names=("ev",),
    ),
    ResourceType(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        False,
        CORE + "Node",
        short_names=("no",),
        subresources=(_status("Node"),),
        has_status=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        True,
        APPS + "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=(_scale(), _status("Deployment", "apps")),
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        True,
        APPS + "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources=(_scale(), _status("ReplicaSet", "apps")),
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        True,
        RBAC + "Role",
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        True,
        RBAC + "RoleBinding",
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        False,
        RBAC + "ClusterRole",
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        False,
        RBAC + "ClusterRoleBinding",
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        False,
        AUTHZ + "SelfSubjectAccessReview",
        verbs=CREATE_ONLY,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        False,
        AUTHZ + "SelfSubjectRulesReview",
        verbs=CREATE_ONLY,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        False,
        AUTHZ + "SubjectAccessReview",
        verbs=CREATE_ONLY,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        True,
        AUTHZ + "LocalSubjectAccessReview",
        verbs=CREATE_ONLY,
    ),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        False,
        AUTHN + "SelfSubjectReview",
        verbs=CREATE_ONLY,
    ),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        "tokenreview",
        False,
        AUTHN + "TokenReview",
        verbs=CREATE_ONLY,
    ),
)

STORED = tuple(t for t in TYPES if "list" in t.verbs)

# Kinds that exist only in request/response bodies (no storage), with their definitions.
EXTRA_DEFINITIONS = {
    ("autoscaling", "v1", "Scale"): "io.k8s.api.autoscaling.v1.Scale",
    ("authentication.k8s.io", "v1", "TokenRequest"): "io.k8s.api.authentication.v1.TokenRequest",
}


class Catalog:
    """Look-ups over `TYPES`: by path segment, by kind, by group."""

    def __init__(self, types: tuple[ResourceType, ...] = TYPES) -> None:
        self.types = types
        self._by_plural = {(t.group, t.version, t.plural): t for t in types}
        self._by_kind = {(t.group, t.kind): t for t in types}

    def by_plural(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_plural.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((group, kind))

    def groups(self) -> list[tuple[str, list[str]]]:
        """Groups in discovery order (core first), each with its versions."""
        seen: dict[str, list[str]] = {}
        for t in self.types:
            versions = seen.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return list(seen.items())

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.types if t.group == group and t.version == version]

    def has_group_version(self, group: str, version: str) -> bool:
        return any(t.group == group and t.version == version for t in self.types)
