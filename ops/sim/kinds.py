"""Per-kind behaviour: defaulting, validation, status handling, as kube-apiserver's strategies.

Each strategy works on plain dicts it may mutate (the registry hands it a private copy). A
validation failure is a list of causes; the registry turns them into a 422 Invalid.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
from typing import Any

from ops.sim import naming
from ops.sim.selectors import selector_from_struct

Obj = dict[str, Any]
Cause = dict[str, str]


def required(field: str, detail: str = "") -> Cause:
    return {
        "reason": "FieldValueRequired",
        "message": "Required value" + (f": {detail}" if detail else ""),
        "field": field,
    }


def invalid(field: str, value: Any, detail: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    if isinstance(value, dict):
        shown = "{" + ", ".join(f'"{k}":"{v}"' for k, v in value.items()) + "}"
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {shown}: {detail}",
        "field": field,
    }


def forbidden(field: str, detail: str) -> Cause:
    return {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}


def duplicate(field: str, value: Any) -> Cause:
    return {
        "reason": "FieldValueDuplicate",
        "message": f'Duplicate value: "{value}"',
        "field": field,
    }


def not_supported(field: str, value: Any, supported: list[str]) -> Cause:
    return {
        "reason": "FieldValueNotSupported",
        "message": f'Unsupported value: "{value}": supported values: '
        + ", ".join(f'"{s}"' for s in supported),
        "field": field,
    }


class Strategy:
    """Defaults: nothing special. Subclasses override what their kind needs."""

    name_check = staticmethod(naming.subdomain_errors)

    def defaults(self, obj: Obj) -> None:
        pass

    def on_create(self, obj: Obj) -> None:
        """Server-set fields on create (status, allocations)."""

    def on_update(self, new: Obj, old: Obj) -> None:
        """Server-kept fields on update (allocations that must not change)."""

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        return []

    def release(self, obj: Obj) -> None:
        """Free what the object held (IPs, ports) when it is gone."""


def validate_meta(obj: Obj, strategy: Strategy, namespaced: bool) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name", "")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    else:
        for err in strategy.name_check(name):
            causes.append(invalid("metadata.name", name, err))
    for key, value in (meta.get("labels") or {}).items():
        for err in naming.label_key_errors(key):
            causes.append(invalid("metadata.labels", key, err))
        if not isinstance(value, str):
            continue
        for err in naming.label_value_errors(value):
            causes.append(invalid("metadata.labels", value, err))
    for key in meta.get("annotations") or {}:
        for err in naming.label_key_errors(key):
            causes.append(invalid("metadata.annotations", key, err))
    return causes


# -- pods ----------------------------------------------------------------------------------------


def _image_pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    if "@" in tag:
        return "IfNotPresent"
    if ":" not in tag or tag.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_container(c: Obj) -> None:
    if c.get("image"):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in itertools.chain(spec.get("initContainers") or [], spec.get("containers") or []):
        default_container(c)
    for vol in spec.get("volumes") or []:
        for key in ("configMap", "secret"):
            if key in vol and isinstance(vol[key], dict):
                vol[key].setdefault("defaultMode", 420)


def validate_pod_spec(spec: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            where = f"{path}.{kind}[{i}]"
            name = c.get("name", "")
            if not name:
                causes.append(required(f"{where}.name"))
            else:
                for err in naming.label_errors(name):
                    causes.append(invalid(f"{where}.name", name, err))
                if name in seen:
                    causes.append(duplicate(f"{where}.name", name))
                seen.add(name)
            if not c.get("image"):
                causes.append(required(f"{where}.image"))
            for j, port in enumerate(c.get("ports") or []):
                number = port.get("containerPort")
                if not isinstance(number, int) or not 0 < number < 65536:
                    causes.append(
                        invalid(
                            f"{where}.ports[{j}].containerPort",
                            number,
                            "must be between 1 and 65535, inclusive",
                        )
                    )
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        causes.append(
            not_supported(f"{path}.restartPolicy", policy, ["Always", "OnFailure", "Never"])
        )
    return causes


def _qos(spec: Obj) -> str:
    requests = [
        ((c.get("resources") or {}).get("requests") or {}) for c in spec.get("containers") or []
    ]
    limits = [
        ((c.get("resources") or {}).get("limits") or {}) for c in spec.get("containers") or []
    ]
    if not any(requests) and not any(limits):
        return "BestEffort"
    if all(lim.get("cpu") and lim.get("memory") for lim in limits) and all(
        (not r) or (r == lim) for r, lim in zip(requests, limits, strict=True)
    ):
        return "Guaranteed"
    return "Burstable"


class PodStrategy(Strategy):
    def defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        default_pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )

    def on_create(self, obj: Obj) -> None:
        spec = obj["spec"]
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec["serviceAccount"] = spec["serviceAccountName"]
        obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes = validate_pod_spec(obj.get("spec") or {}, "spec")
        if old is not None:
            old_images = [c.get("image") for c in old["spec"].get("containers") or []]
            new_names = [c.get("name") for c in obj["spec"].get("containers") or []]
            old_names = [c.get("name") for c in old["spec"].get("containers") or []]
            new_spec = dict(obj["spec"])
            old_spec = dict(old["spec"])
            for spec in (new_spec, old_spec):
                spec["containers"] = [
                    {k: v for k, v in c.items() if k != "image"}
                    for c in spec.get("containers") or []
                ]
                spec.pop("activeDeadlineSeconds", None)
                spec.pop("tolerations", None)
            if new_names != old_names or new_spec != old_spec:
                del old_images
                causes.append(
                    forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,"
                        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                        "`spec.tolerations` (only additions to existing tolerations),"
                        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                        "previously negative)",
                    )
                )
        return causes


# -- workloads ------------------------------------------------------------------------------------


def _validate_selector_and_template(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    selector = spec.get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(required("spec.selector"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector and not selector_from_struct(selector).matches(labels):
        causes.append(
            invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    causes += validate_pod_spec(template.get("spec") or {}, "spec.template.spec")
    return causes


class DeploymentStrategy(Strategy):
    def defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        default_pod_spec(template.setdefault("spec", {}))

    def on_create(self, obj: Obj) -> None:
        obj["status"] = {}

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes = _validate_selector_and_template(obj)
        if old is not None and old["spec"].get("selector") != obj["spec"].get("selector"):
            causes.append(
                invalid("spec.selector", obj["spec"].get("selector"), "field is immutable")
            )
        return causes


class ReplicaSetStrategy(DeploymentStrategy):
    def defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        default_pod_spec(template.setdefault("spec", {}))

    def on_create(self, obj: Obj) -> None:
        obj["status"] = {"replicas": 0}


# -- core ------------------------------------------------------------------------------------------


class NamespaceStrategy(Strategy):
    name_check = staticmethod(naming.label_errors)

    def defaults(self, obj: Obj) -> None:
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        name = obj["metadata"].get("name")
        if name:
            labels["kubernetes.io/metadata.name"] = name

    def on_create(self, obj: Obj) -> None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}

    def on_update(self, new: Obj, old: Obj) -> None:
        new["spec"] = old.get("spec") or {}


class ServiceStrategy(Strategy):
    name_check = staticmethod(naming.dns1035_errors)

    def __init__(self) -> None:
        self._ips: set[str] = set()
        self._node_ports: set[int] = set()
        self._net = ipaddress.ip_network("10.96.0.0/12")
        self._next_ip = 2
        self._next_port = 30000

    def defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] in ("ClusterIP", "NodePort", "LoadBalancer"):
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])

    def _allocate_ip(self) -> str:
        while True:
            ip = str(self._net.network_address + self._next_ip)
            self._next_ip += 1
            if ip not in self._ips:
                self._ips.add(ip)
                return ip

    def _allocate_port(self) -> int:
        while self._next_port in self._node_ports:
            self._next_port += 1
        self._node_ports.add(self._next_port)
        return self._next_port

    def on_create(self, obj: Obj) -> None:
        spec = obj["spec"]
        if spec["type"] != "ExternalName":
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = self._allocate_ip()
            elif spec["clusterIP"] != "None":
                self._ips.add(spec["clusterIP"])
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = self._allocate_port()
                else:
                    self._node_ports.add(port["nodePort"])
        obj["status"] = {"loadBalancer": {}}

    def on_update(self, new: Obj, old: Obj) -> None:
        spec, before = new.setdefault("spec", {}), old.get("spec") or {}
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key in before and not spec.get(key):
                spec[key] = before[key]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            old_ports = {
                (p.get("port"), p.get("protocol")): p.get("nodePort")
                for p in before.get("ports") or []
            }
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = (
                        old_ports.get((port.get("port"), port.get("protocol")))
                        or self._allocate_port()
                    )

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        spec = obj.get("spec") or {}
        causes: list[Cause] = []
        kind = spec.get("type")
        if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            causes.append(
                not_supported(
                    "spec.type", kind, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
                )
            )
        ports = spec.get("ports") or []
        if kind != "ExternalName" and spec.get("clusterIP") != "None" and not ports:
            causes.append(required("spec.ports"))
        names = set()
        for i, port in enumerate(ports):
            number = port.get("port")
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append(
                    invalid(
                        f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"
                    )
                )
            if len(ports) > 1 and not port.get("name"):
                causes.append(required(f"spec.ports[{i}].name"))
            if port.get("name") in names:
                causes.append(duplicate(f"spec.ports[{i}].name", port.get("name")))
            names.add(port.get("name"))
        if old is not None:
            before = (old.get("spec") or {}).get("clusterIP")
            if before and spec.get("clusterIP") and spec["clusterIP"] != before:
                causes.append(
                    invalid("spec.clusterIPs[0]", spec["clusterIP"], "may not change once set")
                )
        return causes

    def release(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        self._ips.discard(spec.get("clusterIP", ""))
        for port in spec.get("ports") or []:
            self._node_ports.discard(port.get("nodePort", 0))


def _validate_data_keys(obj: Obj, fields: tuple[str, ...]) -> list[Cause]:
    causes = []
    for fld in fields:
        for key in obj.get(fld) or {}:
            if not naming.CONFIG_KEY.match(key) or len(key) > 253:
                causes.append(
                    invalid(
                        f"{fld}[{key}]" if False else fld,
                        key,
                        "a valid config key must consist of alphanumeric characters, '-', '_' "
                        "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                        "for validation is '[-._a-zA-Z0-9]+')",
                    )
                )
    return causes


class ConfigMapStrategy(Strategy):
    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes = _validate_data_keys(obj, ("data", "binaryData"))
        if (
            old is not None
            and old.get("immutable")
            and (
                old.get("data") != obj.get("data") or old.get("binaryData") != obj.get("binaryData")
            )
        ):
            causes.append(forbidden("data", "field is immutable when `immutable` is set"))
        return causes


class SecretStrategy(Strategy):
    def defaults(self, obj: Obj) -> None:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if string_data:
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes = _validate_data_keys(obj, ("data",))
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(value or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                causes.append(
                    invalid(f"data[{key}]", "<secret contents redacted>", "illegal base64 data")
                )
        if old is not None and old.get("type") != obj.get("type"):
            causes.append(invalid("type", obj.get("type"), "field is immutable"))
        return causes


class RoleBindingStrategy(Strategy):
    name_check = staticmethod(naming.path_segment_errors)

    def defaults(self, obj: Obj) -> None:
        for subject in obj.get("subjects") or []:
            if subject.get("kind") in ("User", "Group"):
                subject.setdefault("apiGroup", "rbac.authorization.k8s.io")
            elif subject.get("kind") == "ServiceAccount":
                subject.setdefault("apiGroup", "")

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes: list[Cause] = []
        ref = obj.get("roleRef") or {}
        if not ref.get("name"):
            causes.append(required("roleRef.name"))
        if ref.get("kind") not in ("Role", "ClusterRole"):
            causes.append(
                not_supported("roleRef.kind", ref.get("kind", ""), ["ClusterRole", "Role"])
            )
        if old is not None and old.get("roleRef") != ref:
            causes.append(invalid("roleRef", ref, "cannot change roleRef"))
        for i, subject in enumerate(obj.get("subjects") or []):
            if subject.get("kind") not in ("User", "Group", "ServiceAccount"):
                causes.append(
                    not_supported(
                        f"subjects[{i}].kind",
                        subject.get("kind", ""),
                        ["Group", "ServiceAccount", "User"],
                    )
                )
            if not subject.get("name"):
                causes.append(required(f"subjects[{i}].name"))
        return causes


class RoleStrategy(Strategy):
    name_check = staticmethod(naming.path_segment_errors)

    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        causes: list[Cause] = []
        for i, rule in enumerate(obj.get("rules") or []):
            if not rule.get("verbs"):
                causes.append(
                    required(f"rules[{i}].verbs", "verbs must contain at least one value")
                )
            if rule.get("nonResourceURLs") and (obj.get("metadata") or {}).get("namespace"):
                causes.append(
                    invalid(
                        f"rules[{i}].nonResourceURLs",
                        rule["nonResourceURLs"],
                        "namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if (
                not rule.get("nonResourceURLs")
                and not rule.get("resources")
                and not (obj.get("aggregationRule"))
            ):
                causes.append(
                    required(
                        f"rules[{i}].resources", "resource rules must supply at least one resource"
                    )
                )
        return causes


class EventStrategy(Strategy):
    def validate(self, obj: Obj, old: Obj | None) -> list[Cause]:
        involved = obj.get("involvedObject") or {}
        ns = (obj.get("metadata") or {}).get("namespace")
        if involved.get("namespace") and ns and involved["namespace"] != ns:
            return [
                invalid(
                    "involvedObject.namespace",
                    involved["namespace"],
                    "does not match event.namespace",
                )
            ]
        return []


def strategies() -> dict[str, Strategy]:
    """A fresh strategy set per simulator (services hold allocation state)."""
    rbac = RoleBindingStrategy()
    role = RoleStrategy()
    return {
        "/pods": PodStrategy(),
        "/namespaces": NamespaceStrategy(),
        "/services": ServiceStrategy(),
        "/configmaps": ConfigMapStrategy(),
        "/secrets": SecretStrategy(),
        "/events": EventStrategy(),
        "apps/deployments": DeploymentStrategy(),
        "apps/replicasets": ReplicaSetStrategy(),
        "rbac.authorization.k8s.io/rolebindings": rbac,
        "rbac.authorization.k8s.io/clusterrolebindings": rbac,
        "rbac.authorization.k8s.io/roles": role,
        "rbac.authorization.k8s.io/clusterroles": role,
    }
