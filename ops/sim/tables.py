"""Server-side printing: objects to meta.k8s.io/v1 Tables with the columns kubectl shows.

Columns and cell rules follow kube-apiserver's printers (pkg/printers/internalversion): the pod
STATUS reason logic, READY counts, AGE as a human duration, priority-1 columns for -o wide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ops.sim import naming
from ops.sim.selectors import selector_string

Obj = dict[str, Any]

NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def col(name: str, typ: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> Obj:
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


NAME = col("Name", fmt="name", desc=NAME_DESC)
AGE = col("Age", desc=AGE_DESC)


def age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return naming.human_duration((naming.utcnow() - naming.parse_timestamp(ts)).total_seconds())


def _since(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    return naming.human_duration((naming.utcnow() - naming.parse_timestamp(ts)).total_seconds())


def _name(obj: Obj) -> str:
    return obj["metadata"]["name"]


# -- pods -----------------------------------------------------------------------------------------


def _pod_cells(pod: Obj) -> list[Any]:
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    reason = st.get("reason") or st.get("phase") or "Pending"
    initializing = False
    init_statuses = st.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (
                term.get("reason") or f"Signal:{term.get('signal')}"
                if term.get("signal")
                else "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
            )
        elif state.get("waiting") and state["waiting"].get("reason") not in (
            None,
            "",
            "PodInitializing",
        ):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            state = cs.get("state") or {}
            if state.get("waiting") and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = term.get("reason") or (
                    f"Signal:{term['signal']}"
                    if term.get("signal")
                    else f"ExitCode:{term.get('exitCode')}"
                )
            elif state.get("running") and cs.get("ready"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            conditions = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
            reason = "Running" if conditions.get("Ready") == "True" else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    restarts_cell: Any = restarts
    ips = [p.get("ip") for p in st.get("podIPs") or [] if p.get("ip")] or (
        [st["podIP"]] if st.get("podIP") else []
    )
    gates = spec.get("readinessGates") or []
    gates_cell = "<none>"
    if gates:
        conditions = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        true_count = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gates_cell = f"{true_count}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        age(pod),
        ips[0] if ips else "<none>",
        spec.get("nodeName") or "<none>",
        st.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


POD_COLUMNS = [
    NAME,
    col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
    col("Status", desc="The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        desc="The number of times the containers in this pod have been restarted and when the "
        "last container in this pod has restarted.",
    ),
    AGE,
    col("IP", priority=1, desc="IP address assigned to the pod"),
    col("Node", priority=1, desc="Name of the node assigned to the pod"),
    col("Nominated Node", priority=1, desc="Nominated node name for the pod"),
    col("Readiness Gates", priority=1, desc="Readiness gates for the pod"),
]


# -- workloads ------------------------------------------------------------------------------------


def _containers(template_spec: Obj) -> tuple[str, str]:
    cs = template_spec.get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _deployment_cells(d: Obj) -> list[Any]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [
        _name(d),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        age(d),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


DEPLOYMENT_COLUMNS = [
    NAME,
    col("Ready", desc="Number of the pod with ready state"),
    col(
        "Up-to-date",
        "integer",
        desc="Total number of non-terminated pods targeted by this deployment that have the "
        "desired template spec.",
    ),
    col(
        "Available",
        "integer",
        desc="Total number of available pods (ready for at least minReadySeconds) targeted by "
        "this deployment.",
    ),
    AGE,
    col("Containers", priority=1, desc="Names of each container in the template."),
    col("Images", priority=1, desc="Images referenced by each container in the template."),
    col(
        "Selector",
        priority=1,
        desc="Label selector for pods. Existing ReplicaSets whose pods are selected by this will "
        "be the ones affected by this deployment.",
    ),
]


def _replicaset_cells(rs: Obj) -> list[Any]:
    spec, st = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [
        _name(rs),
        spec.get("replicas", 0),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        age(rs),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


REPLICASET_COLUMNS = [
    NAME,
    col("Desired", "integer", desc="Replicas is the number of desired pods."),
    col("Current", "integer", desc="Replicas is the most recently observed number of replicas."),
    col("Ready", "integer", desc="The number of ready replicas for this replica set."),
    AGE,
    col("Containers", priority=1, desc="Names of each container in the template."),
    col("Images", priority=1, desc="Images referenced by each container in the template."),
    col(
        "Selector",
        priority=1,
        desc="Selector is a label query over pods that should match the replica count.",
    ),
]


# -- core -----------------------------------------------------------------------------------------


def _service_cells(svc: Obj) -> list[Any]:
    spec = svc.get("spec") or {}
    typ = spec.get("type", "ClusterIP")
    external = "<none>"
    if typ == "ExternalName":
        external = spec.get("externalName", "<none>")
    elif typ == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = [i.get("ip") or i.get("hostname") for i in ingress]
        external = ",".join(ips) if ips else "<pending>"
    elif spec.get("externalIPs"):
        external = ",".join(spec["externalIPs"])
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            text = f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        ports.append(text)
    selector = spec.get("selector") or {}
    return [
        _name(svc),
        typ,
        spec.get("clusterIP") or "<none>",
        external,
        ",".join(ports) or "<none>",
        age(svc),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


SERVICE_COLUMNS = [
    NAME,
    col("Type", desc="type determines how the Service is exposed."),
    col("Cluster-IP", desc="clusterIP is the IP address of the service."),
    col(
        "External-IP",
        desc="externalIPs is a list of IP addresses for which nodes in the cluster will also "
        "accept traffic for this service.",
    ),
    col("Port(s)", desc="The list of ports that are exposed by this service."),
    AGE,
    col(
        "Selector",
        priority=1,
        desc="Route service traffic to pods with label keys and values matching this selector.",
    ),
]


def _event_object(ev: Obj) -> str:
    inv = ev.get("involvedObject") or {}
    return f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}"


def _event_cells(ev: Obj) -> list[Any]:
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
    first = (
        ev.get("firstTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
    )
    source = (ev.get("source") or {}).get("component") or ev.get("reportingComponent") or ""
    host = (ev.get("source") or {}).get("host")
    if host:
        source = f"{source}, {host}"
    return [
        _since(last),
        ev.get("type", ""),
        ev.get("reason", ""),
        _event_object(ev),
        (ev.get("involvedObject") or {}).get("fieldPath", ""),
        source,
        (ev.get("message") or "").strip(),
        _since(first),
        ev.get("count", 1),
        _name(ev),
    ]


EVENT_COLUMNS = [
    col("Last Seen", desc="Time when last event occurred"),
    col("Type", desc="Type of this event."),
    col("Reason", desc="Reason for the transition into the object's current status."),
    col("Object", desc="Object this event is about."),
    col("Subobject", priority=1, desc="The subobject of the involved object."),
    col("Source", priority=1, desc="The component reporting this event."),
    col("Message", desc="A human-readable description of the status of this operation."),
    col("First Seen", priority=1, desc="The time at which the event was first recorded."),
    col("Count", "integer", priority=1, desc="The number of times this event has occurred."),
    col("Name", priority=1, fmt="name", desc=NAME_DESC),
]


def _binding_cells(b: Obj) -> list[Any]:
    ref = b.get("roleRef") or {}
    users, groups, sas = [], [], []
    for s in b.get("subjects") or []:
        if s.get("kind") == "User":
            users.append(s.get("name", ""))
        elif s.get("kind") == "Group":
            groups.append(s.get("name", ""))
        elif s.get("kind") == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
    return [
        _name(b),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        age(b),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(sas),
    ]


BINDING_COLUMNS = [
    NAME,
    col("Role", desc="RoleRef is the reference to the role."),
    AGE,
    col("Users", priority=1, desc="Users in the roleBinding"),
    col("Groups", priority=1, desc="Groups in the roleBinding"),
    col("ServiceAccounts", priority=1, desc="ServiceAccounts in the roleBinding"),
]


def _node_cells(n: Obj) -> list[Any]:
    st = n.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    state = "Ready" if conditions.get("Ready") == "True" else "NotReady"
    if (n.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1]
        for k in (n["metadata"].get("labels") or {})
        if k.startswith("node-role.kubernetes.io/")
    )
    addresses = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    info = st.get("nodeInfo") or {}
    return [
        _name(n),
        state,
        ",".join(roles) or "<none>",
        age(n),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


NODE_COLUMNS = [
    NAME,
    col("Status", desc="The status of the node"),
    col("Roles", desc="The roles of the node"),
    AGE,
    col("Version", desc="Kubelet Version reported by the node."),
    col("Internal-IP", priority=1, desc="List of addresses reachable to the node."),
    col("External-IP", priority=1, desc="List of addresses reachable to the node."),
    col(
        "OS-Image",
        priority=1,
        desc="OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 "
        "(wheezy)).",
    ),
    col(
        "Kernel-Version",
        priority=1,
        desc="Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    col(
        "Container-Runtime",
        priority=1,
        desc="ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
]

Printer = tuple[list[Obj], Callable[[Obj], list[Any]]]

PRINTERS: dict[str, Printer] = {
    "/pods": (POD_COLUMNS, _pod_cells),
    "/namespaces": (
        [NAME, col("Status", desc="The status of the namespace"), AGE],
        lambda o: [_name(o), (o.get("status") or {}).get("phase", ""), age(o)],
    ),
    "/services": (SERVICE_COLUMNS, _service_cells),
    "/configmaps": (
        [NAME, col("Data", "integer", desc="Data contains the configuration data."), AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)],
    ),
    "/secrets": (
        [
            NAME,
            col("Type", desc="The type of the secret"),
            col("Data", "integer", desc="The number of entries in the secret"),
            AGE,
        ],
        lambda o: [_name(o), o.get("type", ""), len(o.get("data") or {}), age(o)],
    ),
    "/serviceaccounts": (
        [
            NAME,
            col(
                "Secrets",
                "integer",
                desc="Secrets is a list of the secrets in the same namespace that pods running "
                "using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        lambda o: [_name(o), len(o.get("secrets") or []), age(o)],
    ),
    "/events": (EVENT_COLUMNS, _event_cells),
    "/nodes": (NODE_COLUMNS, _node_cells),
    "apps/deployments": (DEPLOYMENT_COLUMNS, _deployment_cells),
    "apps/replicasets": (REPLICASET_COLUMNS, _replicaset_cells),
    "rbac.authorization.k8s.io/roles": (
        [NAME, col("Created At", "date", desc=AGE_DESC)],
        lambda o: [_name(o), o["metadata"].get("creationTimestamp", "")],
    ),
    "rbac.authorization.k8s.io/clusterroles": (
        [NAME, col("Created At", "date", desc=AGE_DESC)],
        lambda o: [_name(o), o["metadata"].get("creationTimestamp", "")],
    ),
    "rbac.authorization.k8s.io/rolebindings": (BINDING_COLUMNS, _binding_cells),
    "rbac.authorization.k8s.io/clusterrolebindings": (BINDING_COLUMNS, _binding_cells),
}

DEFAULT: Printer = (
    [NAME, col("Created At", "date", desc=AGE_DESC)],
    lambda o: [_name(o), o["metadata"].get("creationTimestamp", "")],
)


def _row_object(obj: Obj, include: str, api_version: str, kind: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        full = dict(obj)
        full.setdefault("apiVersion", api_version)
        full.setdefault("kind", kind)
        return full
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    resource_key: str,
    objects: list[Obj],
    list_meta: Obj,
    include: str,
    api_version: str,
    kind: str,
    headers: bool = True,
) -> Obj:
    columns, cells = PRINTERS.get(resource_key, DEFAULT)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj)}
        embedded = _row_object(obj, include, api_version, kind)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta}
    if headers:
        out["columnDefinitions"] = columns
    out["rows"] = rows
    return out
