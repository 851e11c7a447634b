"""The objects a fresh cluster starts with: namespaces, a node, and the default RBAC policy.

The default cluster roles mirror kube-apiserver's bootstrap policy for the resources the simulator
serves (and the common ones it does not, so bindings read the same): cluster-admin, admin, edit and
view are aggregated from the system:aggregate-to-* roles, as on a real cluster.
"""

from __future__ import annotations

from typing import Any

RW = ["create", "delete", "deletecollection", "patch", "update"]
RO = ["get", "list", "watch"]
AGG = "rbac.authorization.k8s.io/aggregate-to-"
BOOT_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
BOOT_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}

NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _role(
    name: str,
    rules: list[dict],
    labels: dict[str, str] | None = None,
    aggregate: list[str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {**BOOT_LABELS, **(labels or {})},
        "annotations": dict(BOOT_ANNOTATIONS),
    }
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": rules,
    }
    if aggregate:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {f"{AGG}{a}": "true"}} for a in aggregate]
        }
        role["rules"] = []
    return role


def _binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": dict(BOOT_LABELS),
            "annotations": dict(BOOT_ANNOTATIONS),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups
        ],
    }


def cluster_roles() -> list[dict[str, Any]]:
    view = [
        _rule(
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
            RO,
        ),
        _rule(
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
            RO,
        ),
        _rule([""], ["namespaces"], RO),
        _rule(["discovery.k8s.io"], ["endpointslices"], RO),
        _rule(
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
            RO,
        ),
        _rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], RO),
        _rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], RO),
        _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], RO),
        _rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], RO),
    ]
    edit = [
        _rule(
            [""],
            [
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            RO,
        ),
        _rule([""], ["serviceaccounts"], ["impersonate"]),
        _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], RW),
        _rule([""], ["pods/eviction"], ["create"]),
        _rule(
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
            RW,
        ),
        _rule([""], ["serviceaccounts/token"], ["create"]),
        _rule(
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
            RW,
        ),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], RW),
        _rule(["batch"], ["cronjobs", "jobs"], RW),
        _rule(["policy"], ["poddisruptionbudgets"], RW),
        _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], RW),
    ]
    admin = [
        _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
        _rule(["rbac.authorization.k8s.io"], ["rolebindings", "roles"], RW + RO),
    ]
    discovery_urls = [
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
    ]
    return [
        _role(
            "cluster-admin",
            [
                _rule(["*"], ["*"], ["*"]),
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _role("admin", [], None, aggregate=["admin"]),
        _role("edit", [], {f"{AGG}admin": "true"}, aggregate=["edit"]),
        _role("view", [], {f"{AGG}edit": "true"}, aggregate=["view"]),
        _role("system:aggregate-to-admin", admin, {f"{AGG}admin": "true"}),
        _role("system:aggregate-to-edit", edit, {f"{AGG}admin": "true", f"{AGG}edit": "true"}),
        _role(
            "system:aggregate-to-view",
            view,
            {f"{AGG}admin": "true", f"{AGG}edit": "true", f"{AGG}view": "true"},
        ),
        _role(
            "system:basic-user",
            [
                _rule(
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    ["create"],
                ),
                _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
            ],
        ),
        _role("system:discovery", [{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        _role(
            "system:public-info-viewer",
            [
                {
                    "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"],
                },
            ],
        ),
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            ["system:authenticated", "system:unauthenticated"],
        ),
    ]


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.10"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kubegate simulator",
                "kernelVersion": "6.1.0",
                "containerRuntimeVersion": "sim://1.0",
                "kubeletVersion": "v1.33.1",
                "kubeProxyVersion": "v1.33.1",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
