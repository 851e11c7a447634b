"""The control loops a cluster runs behind the API: what makes a Deployment end up Running.

deployment -> replicaset -> pods, a scheduler and a kubelet that start pods at once, garbage
collection by ownerReferences (background, foreground, orphan), namespace termination,
service-account and root-CA publishing per namespace, cluster-role aggregation, and Events.
Each reconcile is synchronous, so it sees and writes a consistent store; one task drains the
work queued by store changes.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ops.sim import naming, status
from ops.sim.authn import UserInfo
from ops.sim.errors import StatusError
from ops.sim.registry import DeleteOptions, WriteContext
from ops.sim.resources import ResourceType
from ops.sim.selectors import selector_from_struct
from ops.sim.store import ADDED, DELETED, Change

if TYPE_CHECKING:
    from ops.sim.simulator import Simulator

log = logging.getLogger("kubegate.ops.sim.controllers")

Obj = dict[str, Any]
SYSTEM = UserInfo("system:kube-controller-manager", "", ("system:masters",))
NODE = "sim-node-1"
REVISION = "deployment.kubernetes.io/revision"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def _owner_ref(obj: Obj, controller: bool = True) -> Obj:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def _controlled_by(obj: Obj, owner_uid: str) -> bool:
    return any(
        r.get("uid") == owner_uid and r.get("controller")
        for r in obj["metadata"].get("ownerReferences") or []
    )


def _condition(
    type_: str,
    status_: str,
    reason: str,
    message: str,
    now: str,
    previous: list[Obj] | None = None,
    update_time: bool = True,
) -> Obj:
    old = next((c for c in previous or [] if c.get("type") == type_), None)
    transition = (
        old["lastTransitionTime"]
        if old and old.get("status") == status_ and old.get("lastTransitionTime")
        else now
    )
    cond: Obj = {"type": type_, "status": status_}
    if update_time:
        cond["lastUpdateTime"] = (
            now
            if not old or old.get("reason") != reason or old.get("status") != status_
            else old.get("lastUpdateTime", now)
        )
    cond["lastTransitionTime"] = transition
    cond["reason"] = reason
    cond["message"] = message
    return cond


class Controllers:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.registry = sim.registry
        self.store = sim.store
        self._dirty: dict[str, set[tuple[str, str]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pod_ip = 1
        self._started_pods: set[tuple[str, str]] = set()
        self._handlers: dict[str, Callable[[str, str], None]] = {
            "deployment": self._sync_deployment,
            "replicaset": self._sync_replicaset,
            "pod": self._sync_pod,
            "namespace": self._sync_namespace,
            "gc": self._sync_foreground,
            "aggregate": self._sync_aggregation,
        }
        self.store.listen(self._on_change)

    def rt(self, group: str, plural: str) -> ResourceType:
        rt = self.sim.catalog.by_plural(group, "v1", plural)
        assert rt is not None
        return rt

    def ctx(self, manager: str = "kube-controller-manager") -> WriteContext:
        return WriteContext(SYSTEM, manager)

    # -- scheduling work ------------------------------------------------------------------------

    def _enqueue(self, kind: str, namespace: str, name: str) -> None:
        self._dirty.setdefault(kind, set()).add((namespace, name))
        self._wake.set()

    def _on_change(self, change: Change) -> None:
        obj, (ns, name) = change.obj, change.key
        resource = change.resource
        if resource == "apps/deployments":
            self._enqueue("deployment", ns, name)
        elif resource == "apps/replicasets":
            self._enqueue("replicaset", ns, name)
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == "Deployment":
                    self._enqueue("deployment", ns, ref["name"])
        elif resource == "/pods":
            self._enqueue("pod", ns, name)
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == "ReplicaSet":
                    self._enqueue("replicaset", ns, ref["name"])
        elif resource == "/namespaces":
            self._enqueue("namespace", "", name)
        elif resource == "rbac.authorization.k8s.io/clusterroles":
            self._enqueue("aggregate", "", "")
        if resource == "/serviceaccounts" and change.type == DELETED:
            pass
        if change.type == DELETED:
            self._enqueue("gc", "", obj["metadata"].get("uid", ""))
        elif obj["metadata"].get("deletionTimestamp") and {"foregroundDeletion", "orphan"} & set(
            obj["metadata"].get("finalizers") or []
        ):
            self._enqueue("gc", resource, f"{ns}/{name}")
        if ns and change.type == DELETED:
            owner = self.store.get("/namespaces", ("", ns))
            if owner is not None and owner["metadata"].get("deletionTimestamp"):
                self._enqueue("namespace", "", ns)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-controllers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            rounds = 0
            while self._dirty and rounds < 50:
                rounds += 1
                work, self._dirty = self._dirty, {}
                for kind in ("aggregate", "namespace", "gc", "deployment", "replicaset", "pod"):
                    for ns, name in sorted(work.get(kind, ())):
                        try:
                            self._handlers[kind](ns, name)
                        except StatusError as exc:
                            if exc.code not in (404, 409):
                                log.warning(
                                    "reconcile refused",
                                    extra={
                                        "controller": kind,
                                        "object": f"{ns}/{name}",
                                        "error": exc.message,
                                    },
                                )
                            self._enqueue(kind, ns, name) if exc.code == 409 else None
                        except Exception:
                            log.exception(
                                "reconcile failed",
                                extra={"controller": kind, "object": f"{ns}/{name}"},
                            )
                await asyncio.sleep(0)
            if self._dirty:
                await asyncio.sleep(0.01)
                self._wake.set()

    # -- events -------------------------------------------------------------------------------

    def event(self, obj: Obj, type_: str, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = naming.timestamp()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{naming.new_uid().replace('-', '')[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {
                "component": component,
                **({"host": NODE} if component == "kubelet" else {}),
            },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": NODE if component == "kubelet" else "",
        }
        if not meta.get("namespace"):
            ev["involvedObject"].pop("namespace")
        ns_obj = self.store.get("/namespaces", ("", namespace))
        if ns_obj is None or ns_obj["metadata"].get("deletionTimestamp"):
            return
        try:
            self.registry.create(self.rt("", "events"), namespace, ev, self.ctx(component))
        except StatusError:
            pass

    # -- namespaces -----------------------------------------------------------------------------

    def _sync_namespace(self, _: str, name: str) -> None:
        ns = self.store.get("/namespaces", ("", name))
        if ns is None:
            return
        if not ns["metadata"].get("deletionTimestamp"):
            self._ensure_namespace_defaults(name)
            return
        remaining = 0
        for rt in self.sim.catalog.types:
            if not rt.namespaced or "list" not in rt.verbs:
                continue
            for obj in self.store.items(rt.key, name):
                remaining += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    self.registry.delete(
                        rt, name, obj["metadata"]["name"], DeleteOptions(propagation="Background")
                    )
                except StatusError:
                    pass
        if remaining:
            return
        finalizers = (ns.get("spec") or {}).get("finalizers") or []
        if finalizers:
            new = copy.deepcopy(ns)
            new["spec"]["finalizers"] = [f for f in finalizers if f != "kubernetes"]
            self.sim.finalize_namespace(name, new, self.ctx("kube-controller-manager"))

    def _ensure_namespace_defaults(self, name: str) -> None:
        sa_rt = self.rt("", "serviceaccounts")
        if self.store.get(sa_rt.key, (name, "default")) is None:
            self.registry.create(
                sa_rt,
                name,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
                self.ctx(),
            )
        cm_rt = self.rt("", "configmaps")
        if self.store.get(cm_rt.key, (name, "kube-root-ca.crt")) is None:
            self.registry.create(
                cm_rt,
                name,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that can be used "
                            "to verify the kube-apiserver when using internal endpoints such "
                            "as the internal service IP or kubernetes.default.svc. No other "
                            "usage is guaranteed across distributions of Kubernetes clusters."
                        },
                    },
                    "data": {"ca.crt": self.sim.ca.cert_pem.decode()},
                },
                self.ctx(),
            )

    # -- garbage collection ----------------------------------------------------------------------

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        out = []
        for rt in self.sim.catalog.types:
            if "list" not in rt.verbs:
                continue
            for obj in self.store.items(rt.key):
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    out.append((rt, obj))
        return out

    def _sync_foreground(self, resource: str, ref: str) -> None:
        if not resource:
            # an owner is gone: delete dependents whose owners are all gone
            for rt, obj in self._dependents(ref):
                meta = obj["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                live = [
                    r
                    for r in meta.get("ownerReferences") or []
                    if r.get("uid") != ref and self._owner_alive(r, meta.get("namespace", ""))
                ]
                if live:
                    continue
                try:
                    self.registry.delete(
                        rt,
                        meta.get("namespace", ""),
                        meta["name"],
                        DeleteOptions(propagation="Background"),
                    )
                except StatusError:
                    pass
            return
        ns, _, name = ref.partition("/")
        rt = next(t for t in self.sim.catalog.types if t.key == resource)
        obj = self.store.get(resource, (ns, name))
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        finalizers = list(obj["metadata"].get("finalizers") or [])
        dependents = self._dependents(uid)
        if "orphan" in finalizers:
            for dep_rt, dep in dependents:
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid
                ]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self.registry.update(
                    dep_rt,
                    dep["metadata"].get("namespace", ""),
                    dep["metadata"]["name"],
                    new,
                    self.ctx("kube-controller-manager"),
                )
            finalizers.remove("orphan")
        elif "foregroundDeletion" in finalizers:
            for dep_rt, dep in dependents:
                if not dep["metadata"].get("deletionTimestamp"):
                    self.registry.delete(
                        dep_rt,
                        dep["metadata"].get("namespace", ""),
                        dep["metadata"]["name"],
                        DeleteOptions(propagation="Foreground"),
                    )
            if any(True for _ in dependents):
                return
            finalizers.remove("foregroundDeletion")
        else:
            return
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = finalizers
        if not finalizers:
            new["metadata"].pop("finalizers")
        self.registry.update(rt, ns, name, new, self.ctx("kube-controller-manager"))

    def _owner_alive(self, ref: Obj, namespace: str) -> bool:
        for rt in self.sim.catalog.types:
            if rt.kind == ref.get("kind") and "list" in rt.verbs:
                obj = self.store.get(
                    rt.key, (namespace if rt.namespaced else "", ref.get("name", ""))
                )
                return obj is not None and obj["metadata"]["uid"] == ref.get("uid")
        return False

    # -- RBAC aggregation --------------------------------------------------------------------------

    def _sync_aggregation(self, _: str, __: str) -> None:
        rt = self.rt("rbac.authorization.k8s.io", "clusterroles")
        for _round in range(5):
            changed = False
            roles = self.store.items(rt.key)
            for role in roles:
                agg = role.get("aggregationRule")
                if not agg:
                    continue
                selectors = [selector_from_struct(s) for s in agg.get("clusterRoleSelectors") or []]
                rules: list[Obj] = []
                for other in roles:
                    if other["metadata"]["name"] == role["metadata"]["name"]:
                        continue
                    labels = other["metadata"].get("labels") or {}
                    if any(s.matches(labels) for s in selectors if not s.empty):
                        for rule in other.get("rules") or []:
                            if rule not in rules:
                                rules.append(rule)
                if rules != (role.get("rules") or []):
                    new = copy.deepcopy(role)
                    new["rules"] = rules
                    self.registry.update(
                        rt,
                        "",
                        role["metadata"]["name"],
                        new,
                        self.ctx("clusterrole-aggregation-controller"),
                    )
                    changed = True
            if not changed:
                return

    # -- deployments ----------------------------------------------------------------------------

    def _sync_deployment(self, ns: str, name: str) -> None:
        d_rt = self.rt("apps", "deployments")
        rs_rt = self.rt("apps", "replicasets")
        d = self.store.get(d_rt.key, (ns, name))
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        uid = d["metadata"]["uid"]
        owned = [rs for rs in self.store.items(rs_rt.key, ns) if _controlled_by(rs, uid)]
        template = copy.deepcopy(spec["template"])
        template.get("metadata", {}).pop("creationTimestamp", None)
        h = template_hash(template)
        new_rs = next(
            (
                rs
                for rs in owned
                if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == h
            ),
            None,
        )
        revisions = [
            int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")) for rs in owned
        ]
        desired = spec.get("replicas", 1)
        if spec.get("paused"):
            return
        if new_rs is None:
            revision = max(revisions, default=0) + 1
            labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": h}
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs_template = copy.deepcopy(spec["template"])
            rs_template.setdefault("metadata", {})["labels"] = labels
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{h}",
                    "labels": labels,
                    "annotations": {
                        REVISION: str(revision),
                        "deployment.kubernetes.io/desired-replicas": str(desired),
                        "deployment.kubernetes.io/max-replicas": str(desired + 1),
                    },
                    "ownerReferences": [_owner_ref(d)],
                },
                "spec": {
                    "replicas": desired,
                    "selector": selector,
                    "template": rs_template,
                    **(
                        {"minReadySeconds": spec["minReadySeconds"]}
                        if spec.get("minReadySeconds")
                        else {}
                    ),
                },
            }
            try:
                new_rs = self.registry.create(rs_rt, ns, rs, self.ctx())
            except StatusError as exc:
                if exc.code != 409:
                    raise
                return
            self.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {name}-{h} from 0 to {desired}",
                "deployment-controller",
            )
            owned.append(new_rs)
        else:
            revision = int((new_rs["metadata"].get("annotations") or {}).get(REVISION, "1"))
            if revision < max(revisions, default=0):
                revision = max(revisions) + 1
                self._patch_rs(new_rs, {"annotations": {REVISION: str(revision)}})
            if new_rs["spec"].get("replicas") != desired:
                before = new_rs["spec"].get("replicas", 0)
                new_rs = self._scale_rs(new_rs, desired)
                verb = "up" if desired > before else "down"
                self.event(
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled {verb} replica set {new_rs['metadata']['name']} from {before} to "
                    f"{desired}",
                    "deployment-controller",
                )
        new_status = new_rs.get("status") or {}
        new_ready = (
            new_status.get("availableReplicas", 0) >= desired
            and new_status.get("replicas", 0) == desired
        )
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        for rs in owned:
            if rs["metadata"]["uid"] == new_rs["metadata"]["uid"]:
                continue
            if rs["spec"].get("replicas", 0) and (new_ready or strategy == "Recreate"):
                before = rs["spec"]["replicas"]
                self._scale_rs(rs, 0)
                self.event(
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled down replica set {rs['metadata']['name']} from {before} to 0",
                    "deployment-controller",
                )
        # history limit
        old = sorted(
            (
                rs
                for rs in owned
                if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]
                and not rs["spec"].get("replicas")
                and not (rs.get("status") or {}).get("replicas")
            ),
            key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")),
        )
        limit = spec.get("revisionHistoryLimit", 10)
        for rs in old[: max(0, len(old) - limit)]:
            self.registry.delete(
                rs_rt, ns, rs["metadata"]["name"], DeleteOptions(propagation="Background")
            )
        self._deployment_status(d, new_rs, [rs for rs in owned], revision)

    def _patch_rs(self, rs: Obj, meta: Obj) -> Obj:
        new = copy.deepcopy(rs)
        for key, value in meta.items():
            new["metadata"].setdefault(key, {}).update(value)
        return self.registry.update(
            self.rt("apps", "replicasets"),
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            new,
            self.ctx(),
        )

    def _scale_rs(self, rs: Obj, replicas: int) -> Obj:
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        annotations = new["metadata"].setdefault("annotations", {})
        if replicas:
            annotations["deployment.kubernetes.io/desired-replicas"] = str(replicas)
            annotations["deployment.kubernetes.io/max-replicas"] = str(replicas + 1)
        return self.registry.update(
            self.rt("apps", "replicasets"),
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            new,
            self.ctx(),
        )

    def _deployment_status(self, d: Obj, new_rs: Obj, owned: list[Obj], revision: int) -> None:
        d_rt = self.rt("apps", "deployments")
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        current = {
            rs["metadata"]["uid"]: self.store.get("apps/replicasets", (ns, rs["metadata"]["name"]))
            or rs
            for rs in owned
        }
        new_rs = current.get(new_rs["metadata"]["uid"], new_rs)
        desired = d["spec"].get("replicas", 1)
        total = sum((rs.get("status") or {}).get("replicas", 0) for rs in current.values())
        ready = sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in current.values())
        available = sum(
            (rs.get("status") or {}).get("availableReplicas", 0) for rs in current.values()
        )
        updated = (new_rs.get("status") or {}).get("replicas", 0)
        now = naming.timestamp()
        previous = (d.get("status") or {}).get("conditions") or []
        max_unavailable = ((d["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get(
            "maxUnavailable", "25%"
        )
        if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
            allowed = int(desired * int(max_unavailable[:-1]) / 100)
        else:
            allowed = int(max_unavailable or 0)
        min_available = desired - allowed
        avail_cond = _condition(
            "Available",
            "True" if available >= min_available else "False",
            "MinimumReplicasAvailable"
            if available >= min_available
            else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available >= min_available
            else "Deployment does not have minimum availability.",
            now,
            previous,
        )
        complete = updated == desired and total == desired and available == desired
        rs_name = new_rs["metadata"]["name"]
        prog_cond = _condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" has successfully progressed.'
            if complete
            else f'ReplicaSet "{rs_name}" is progressing.',
            now,
            previous,
        )
        st: Obj = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
        }
        if total - available > 0:
            st["unavailableReplicas"] = total - available
        for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            if not st[key]:
                st.pop(key)
        st["conditions"] = [avail_cond, prog_cond]
        new = copy.deepcopy(d)
        new["status"] = st
        annotations = new["metadata"].setdefault("annotations", {})
        changed_meta = annotations.get(REVISION) != str(revision)
        if changed_meta:
            annotations[REVISION] = str(revision)
            d = self.registry.update(d_rt, ns, name, new, self.ctx())
            new = copy.deepcopy(d)
            new["status"] = st
        if _strip_times(d.get("status")) != _strip_times(st):
            self.registry.update(d_rt, ns, name, new, self.ctx(), "status")

    # -- replicasets ----------------------------------------------------------------------------

    def _sync_replicaset(self, ns: str, name: str) -> None:
        rs_rt = self.rt("apps", "replicasets")
        pod_rt = self.rt("", "pods")
        rs = self.store.get(rs_rt.key, (ns, name))
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.store.items(pod_rt.key, ns) if _controlled_by(p, uid)]
        active = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        desired = rs["spec"].get("replicas", 1)
        template = rs["spec"]["template"]
        if len(active) < desired:
            for _ in range(desired - len(active)):
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": copy.deepcopy(
                            (template.get("metadata") or {}).get("labels") or {}
                        ),
                        "annotations": copy.deepcopy(
                            (template.get("metadata") or {}).get("annotations") or {}
                        ),
                        "ownerReferences": [_owner_ref(rs)],
                    },
                    "spec": copy.deepcopy(template.get("spec") or {}),
                }
                if not pod["metadata"]["annotations"]:
                    pod["metadata"].pop("annotations")
                created = self.registry.create(pod_rt, ns, pod, self.ctx())
                self.event(
                    rs,
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {created['metadata']['name']}",
                    "replicaset-controller",
                )
        elif len(active) > desired:
            ranked = sorted(
                active,
                key=lambda p: (_pod_ready(p), p["metadata"]["creationTimestamp"]),
                reverse=False,
            )
            victims = sorted(
                ranked,
                key=lambda p: (_pod_ready(p),),
            )[: len(active) - desired]
            for pod in victims:
                self.registry.delete(pod_rt, ns, pod["metadata"]["name"], DeleteOptions())
                self.event(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    "replicaset-controller",
                )
        pods = [
            p
            for p in self.store.items(pod_rt.key, ns)
            if _controlled_by(p, uid) and not p["metadata"].get("deletionTimestamp")
        ]
        ready = sum(1 for p in pods if _pod_ready(p))
        st: Obj = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        for key in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
            if not st[key]:
                st.pop(key)
        if (rs.get("status") or {}) != st:
            new = copy.deepcopy(rs)
            new["status"] = st
            self.registry.update(rs_rt, ns, name, new, self.ctx(), "status")

    # -- scheduler + kubelet -----------------------------------------------------------------------

    def _sync_pod(self, ns: str, name: str) -> None:
        pod_rt = self.rt("", "pods")
        pod = self.store.get(pod_rt.key, (ns, name))
        if pod is None:
            if (ns, name) in self._started_pods:
                self._started_pods.discard((ns, name))
                self.sim.notify_pod_removed(ns, name)
            return
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            if meta.get("finalizers"):
                return
            if (ns, name) in self._started_pods:
                self._started_pods.discard((ns, name))
                self.sim.notify_pod_removed(ns, name)
            self.registry.force_remove(pod_rt, ns, name)
            return
        now = naming.timestamp()
        spec = pod["spec"]
        if not spec.get("nodeName"):
            new = copy.deepcopy(pod)
            new["spec"]["nodeName"] = NODE
            new.setdefault("status", {})["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                }
            ]
            saved = self._write_pod_binding(pod, new)
            self.event(
                saved,
                "Normal",
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {NODE}",
                "default-scheduler",
            )
            return
        if (pod.get("status") or {}).get("phase") == "Pending" and (
            ns,
            name,
        ) not in self._started_pods:
            self._start_pod(pod)

    def _write_pod_binding(self, pod: Obj, new: Obj) -> Obj:
        """Bind like the scheduler's pods/binding: nodeName is set without the update rules."""
        pod_rt = self.rt("", "pods")
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(pod_rt.key, (ns, name), new)
        return new

    def _start_pod(self, pod: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        now = naming.timestamp()
        ip = f"10.244.0.{(self._pod_ip % 250) + 2}"
        self._pod_ip += 1
        for c in pod["spec"].get("containers") or []:
            self.event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{c.get("image")}" already present on machine',
                "kubelet",
            )
            self.event(pod, "Normal", "Created", f"Created container: {c.get('name')}", "kubelet")
            self.event(pod, "Normal", "Started", f"Started container {c.get('name')}", "kubelet")
        current = self.store.get("/pods", (ns, name))
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        new = copy.deepcopy(current)
        statuses = []
        for c in new["spec"].get("containers") or []:
            statuses.append(
                {
                    "name": c.get("name"),
                    "state": {"running": {"startedAt": now}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": c.get("image"),
                    "imageID": f"sim://{c.get('image')}",
                    "containerID": f"sim://{naming.new_uid().replace('-', '')}",
                    "started": True,
                }
            )
        init_statuses = []
        for c in new["spec"].get("initContainers") or []:
            init_statuses.append(
                {
                    "name": c.get("name"),
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": c.get("image"),
                    "imageID": f"sim://{c.get('image')}",
                    "containerID": f"sim://{naming.new_uid().replace('-', '')}",
                    "started": False,
                }
            )
        st = new.setdefault("status", {})
        st.update(
            {
                "phase": "Running",
                "conditions": [
                    {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                    for t in (
                        "PodReadyToStartContainers",
                        "Initialized",
                        "Ready",
                        "ContainersReady",
                        "PodScheduled",
                    )
                ],
                "hostIP": "10.0.0.10",
                "hostIPs": [{"ip": "10.0.0.10"}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "containerStatuses": statuses,
            }
        )
        if init_statuses:
            st["initContainerStatuses"] = init_statuses
        saved = self.registry.update(
            self.rt("", "pods"), ns, name, new, self.ctx("kubelet"), "status"
        )
        self._started_pods.add((ns, name))
        self.sim.notify_pod_added(saved)


def _pod_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _strip_times(st: Obj | None) -> Obj | None:
    if not st:
        return st
    out = dict(st)
    out["conditions"] = [
        {k: v for k, v in c.items() if not k.endswith("Time")} for c in st.get("conditions") or []
    ]
    return out


__all__ = ["ADDED", "Controllers", "status"]
