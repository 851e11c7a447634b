"""The generic REST semantics of kube-apiserver's registry over the simulator's store.

create / get / list / update / patch (json, merge, strategic, apply) / delete / deletecollection,
with resourceVersion preconditions, generation, status and scale subresources, finalizers,
graceful pod deletion, dry runs, strict field validation and managedFields. Every method works
on plain dicts and raises `StatusError` for anything the API refuses.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops.sim import apply as ssa
from ops.sim import decoding, naming, patches, status
from ops.sim.authn import UserInfo
from ops.sim.kinds import Strategy, strategies, validate_meta
from ops.sim.resources import Catalog, ResourceType
from ops.sim.selectors import FieldSelector, LabelSelector, selector_string
from ops.sim.store import Key, Obj, Store, TooOldError

NAMESPACES = "/namespaces"
SCALE_DEFINITION = "io.k8s.api.autoscaling.v1.Scale"

PATCH_JSON = "application/json-patch+json"
PATCH_MERGE = "application/merge-patch+json"
PATCH_STRATEGIC = "application/strategic-merge-patch+json"
PATCH_APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (PATCH_JSON, PATCH_MERGE, PATCH_STRATEGIC, PATCH_APPLY)


@dataclass
class WriteContext:
    user: UserInfo
    manager: str
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListOptions:
    labels: LabelSelector
    fields: FieldSelector
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class DeleteOptions:
    propagation: str = ""
    grace_seconds: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("bad version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise status.bad_request(f"continue key is not valid: {exc}") from exc


EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)


class Registry:
    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog
        self.strategies: dict[str, Strategy] = strategies()
        self._default = Strategy()
        self.namespace_type = catalog.by_plural("", "v1", "namespaces")
        # admission checks run after validation: (resource, object, old object, context)
        self.admission: list[Callable[[ResourceType, Obj, Obj | None, WriteContext], None]] = []

    def strategy(self, rt: ResourceType) -> Strategy:
        return self.strategies.get(rt.key, self._default)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, (namespace if rt.namespaced else "", name))
        if obj is None:
            raise status.not_found(rt.qualified, name)
        return obj

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        return self.store.get(rt.key, (namespace if rt.namespaced else "", name))

    def list(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> Obj:
        """A list object (items without apiVersion/kind, as kube-apiserver sends them)."""
        ns = namespace if rt.namespaced and namespace else None
        rv = self.store.rv
        start = ""
        if opts.continue_token:
            rv, start = decode_continue(opts.continue_token)
            if rv < self.store.oldest_rv:
                fresh = encode_continue(self.store.rv, start)
                err = status.expired(EXPIRED_CONTINUE)
                err.details = None
                err.list_continue = fresh  # type: ignore[attr-defined]
                raise err
        elif opts.resource_version and opts.resource_version != "0":
            try:
                wanted = int(opts.resource_version)
            except ValueError as exc:
                raise status.bad_request(
                    f"Invalid value: {opts.resource_version!r}: strconv.ParseUint: parsing "
                    f"{opts.resource_version!r}: invalid syntax"
                ) from exc
            if wanted > self.store.rv:
                raise status.timeout(
                    f"Too large resource version: {wanted}, current: {self.store.rv}", 1
                )
            if opts.resource_version_match == "Exact":
                rv = wanted
        try:
            items = self.store.items_at(rt.key, rv, ns)
        except TooOldError as exc:
            raise status.gone(f"too old resource version: {exc.requested} ({exc.oldest})") from exc
        if start:
            items = [o for o in items if _sort_key(o) >= start]
        matched = [
            o
            for o in items
            if opts.labels.matches(o["metadata"].get("labels")) and opts.fields.matches(o)
        ]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if opts.limit and len(matched) > opts.limit:
            page = matched[: opts.limit]
            meta["continue"] = encode_continue(rv, _sort_key(page[-1]) + "\x00")
            if opts.labels.empty and opts.fields.empty:
                meta["remainingItemCount"] = len(matched) - opts.limit
            matched = page
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.group_version,
            "metadata": meta,
            "items": [_strip_type(o) for o in matched],
        }

    # -- decoding -----------------------------------------------------------------------------

    def decode(
        self,
        rt: ResourceType,
        body: Any,
        ctx: WriteContext,
        definition: str = "",
        kind: str = "",
        group_version: str = "",
    ) -> Obj:
        kind = kind or rt.kind
        group_version = group_version or rt.group_version
        if not isinstance(body, dict):
            raise status.bad_request(
                f"json: cannot unmarshal {decoding.JSON_TYPES.get(type(body), 'value')} into Go "
                f'value of type struct {{ APIVersion string "json:\\"apiVersion,omitempty\\""; '
                f'Kind string "json:\\"kind,omitempty\\"" }}'
            )
        body_version = body.get("apiVersion")
        body_kind = body.get("kind")
        version = group_version.rsplit("/", 1)[-1]
        if body_version and body_version != group_version:
            raise status.bad_request(
                f"the API version in the data ({body_version}) does not match the expected API "
                f"version ({group_version})"
            )
        if body_kind and body_kind != kind:
            raise status.bad_request(
                f'{body_kind} in version "{version}" cannot be handled as a {kind}: '
                f'no kind "{body_kind}" is registered for version "{group_version}"'
            )
        result = decoding.check(body, definition or rt.definition)
        if result.unknown:
            messages = [f'unknown field "{p}"' for p in result.unknown]
            if ctx.field_validation == "Strict":
                raise status.bad_request(
                    f'{kind} in version "{version}" cannot be handled as a {kind}: strict '
                    f"decoding error: {', '.join(messages)}"
                )
            if ctx.field_validation != "Ignore":
                ctx.warnings.extend(messages)
        obj = result.obj
        obj["apiVersion"] = group_version
        obj["kind"] = kind
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        return obj

    # -- create -------------------------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get(NAMESPACES, ("", namespace))
        if ns is None:
            raise status.not_found("namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            err = status.forbidden(
                rt.qualified,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )
            err.details["causes"] = [
                {
                    "reason": "NamespaceTerminating",
                    "message": f"namespace {namespace} is being terminated",
                    "field": "metadata.namespace",
                }
            ]
            raise err

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        strategy = self.strategy(rt)
        causes = validate_meta(obj, strategy, rt.namespaced)
        causes += strategy.validate(obj, old)
        if causes:
            raise status.invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        obj: Obj,
        ctx: WriteContext,
        managed: list[Obj] | None = None,
    ) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise status.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(10):
                candidate = meta["generateName"] + naming.random_suffix()
                if self.find(rt, namespace, candidate) is None:
                    meta["name"] = candidate
                    break
        for key in (
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(key, None)
        strategy = self.strategy(rt)
        strategy.defaults(obj)
        self._validate(rt, obj, None)
        for check in self.admission:
            check(rt, obj, None, ctx)
        name = meta["name"]
        self._check_namespace(rt, namespace, name)
        if self.find(rt, namespace, name) is not None:
            raise status.already_exists(rt.qualified, name)
        if rt.has_status:
            obj.pop("status", None)
        strategy.on_create(obj)
        meta["uid"] = naming.new_uid()
        meta["creationTimestamp"] = naming.timestamp()
        if rt.has_generation:
            meta["generation"] = 1
        now = naming.timestamp()
        if managed is not None:
            meta["managedFields"] = managed
        else:
            meta["managedFields"] = ssa.record_update(
                None, obj, rt.definition, ctx.manager, rt.group_version, now
            )
        if not meta["managedFields"]:
            meta.pop("managedFields")
        if ctx.dry_run:
            strategy.release(obj)
            meta["resourceVersion"] = ""
            return obj
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(rt.key, self._key(rt, namespace, name), obj)
        return obj

    def _key(self, rt: ResourceType, namespace: str, name: str) -> Key:
        return (namespace if rt.namespaced else "", name)

    # -- update -------------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: Obj,
        ctx: WriteContext,
        subresource: str = "",
        managed: list[Obj] | None = None,
    ) -> Obj:
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        old = self.get(rt, namespace, name)
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise status.modified(rt.qualified, name)
        new = self._merge_update(rt, old, obj, subresource)
        return self._commit_update(rt, namespace, name, old, new, ctx, subresource, managed)

    def _merge_update(self, rt: ResourceType, old: Obj, obj: Obj, subresource: str) -> Obj:
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
            return new
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    def _commit_update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        old: Obj,
        new: Obj,
        ctx: WriteContext,
        subresource: str,
        managed: list[Obj] | None,
    ) -> Obj:
        strategy = self.strategy(rt)
        if subresource != "status":
            strategy.defaults(new)
            strategy.on_update(new, old)
        self._validate(rt, new, old)
        for check in self.admission:
            check(rt, new, old, ctx)
        meta = new["metadata"]
        if old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise status.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        {
                            "reason": "FieldValueForbidden",
                            "message": "Forbidden: no new finalizers can be added if the object "
                            "is being deleted",
                            "field": "metadata.finalizers",
                        }
                    ],
                )
        if rt.has_generation and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        now = naming.timestamp()
        if managed is not None:
            meta["managedFields"] = managed
        else:
            meta["managedFields"] = ssa.record_update(
                old, new, rt.definition, ctx.manager, rt.group_version, now, subresource
            )
        if not meta["managedFields"]:
            meta.pop("managedFields")
        if _same(old, new):
            return old
        if ctx.dry_run:
            return new
        key = self._key(rt, namespace, name)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not (rt.key == NAMESPACES and (new.get("spec") or {}).get("finalizers"))
            and rt.key != "/pods"
        ):
            meta["resourceVersion"] = str(self.store.next_rv())
            self.store.remove(rt.key, key, new)
            strategy.release(new)
            return new
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(rt.key, key, new)
        return new

    # -- patch --------------------------------------------------------------------------------

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        body: Any,
        ctx: WriteContext,
        subresource: str = "",
        force: bool = False,
    ) -> Obj:
        if patch_type == PATCH_APPLY:
            return self.apply(rt, namespace, name, body, ctx, subresource, force)
        old = self.get(rt, namespace, name)
        if subresource == "scale":
            return self._patch_scale(rt, namespace, name, old, patch_type, body, ctx)
        current = copy.deepcopy(old)
        if patch_type == PATCH_JSON:
            patched = patches.json_patch(current, body)
        elif patch_type == PATCH_MERGE:
            if not isinstance(body, dict):
                raise status.bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            patched = patches.merge_patch(current, body)
        else:
            patched = patches.strategic_merge_patch(current, body, rt.definition)
        if not isinstance(patched, dict):
            raise status.bad_request("patched object is not an object")
        obj = self.decode(rt, patched, ctx)
        wanted_rv = obj["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise status.modified(rt.qualified, name)
        if obj["metadata"].get("name", name) != name:
            raise status.bad_request(
                f"the name of the object ({obj['metadata'].get('name')}) does not match the name "
                f"on the URL ({name})"
            )
        obj["metadata"]["name"] = name
        new = self._merge_update(rt, old, obj, subresource)
        return self._commit_update(rt, namespace, name, old, new, ctx, subresource, None)

    def apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        ctx: WriteContext,
        subresource: str = "",
        force: bool = False,
    ) -> Obj:
        if not isinstance(body, dict):
            raise status.bad_request(
                "error decoding YAML: the applied configuration is not an object"
            )
        if not body.get("apiVersion") or not body.get("kind"):
            missing = "apiVersion" if not body.get("apiVersion") else "kind"
            raise status.bad_request(
                "invalid object type: /, Kind=" if missing == "kind" else f"{missing} must be set"
            )
        strict = WriteContext(ctx.user, ctx.manager, ctx.dry_run, "Strict", ctx.warnings)
        try:
            config = self.decode(rt, body, strict)
        except status.StatusError as exc:
            if "strict decoding error" in exc.message:
                fields = exc.message.split("strict decoding error: ", 1)[1]
                raise status.StatusError(
                    500 if False else 400,
                    "BadRequest",
                    f"failed to create typed patch object "
                    f"({namespace + '/' if namespace else ''}{name}; "
                    f"{rt.group_version}, Kind={rt.kind}): "
                    + ", ".join(
                        "." + f.split('"')[1] + ": field not declared in schema"
                        for f in fields.split(", ")
                    ),
                ) from exc
            raise
        meta = config["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if not ctx.manager or ctx.manager == "unknown":
            raise status.bad_request(
                "PATCH, application/apply-patch+yaml requests must have a field manager"
            )
        now = naming.timestamp()
        old = self.find(rt, namespace, name)
        if old is None:
            if subresource:
                raise status.not_found(rt.qualified, name)
            merged = ssa.apply(
                None,
                config,
                rt.definition,
                ctx.manager,
                force,
                rt.group_version,
                now,
                rt.qualified,
                name,
            )
            managed = merged["metadata"].pop("managedFields", [])
            merged["metadata"]["name"] = name
            return self.create(rt, namespace, merged, ctx, managed=managed)
        merged = ssa.apply(
            old,
            config,
            rt.definition,
            ctx.manager,
            force,
            rt.group_version,
            now,
            rt.qualified,
            name,
            subresource,
        )
        managed = merged["metadata"]["managedFields"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise status.modified(rt.qualified, name)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._merge_update(rt, old, merged, subresource)
        if subresource == "status":
            new["status"] = merged.get("status")
        return self._commit_update(rt, namespace, name, old, new, ctx, subresource, managed)

    # -- scale --------------------------------------------------------------------------------

    def scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector")
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_string(selector).replace("<none>", ""),
            },
        }

    def update_scale(
        self, rt: ResourceType, namespace: str, name: str, scale: Any, ctx: WriteContext
    ) -> Obj:
        scale = self.decode(rt, scale, ctx, SCALE_DEFINITION, "Scale", "autoscaling/v1")
        old = self.get(rt, namespace, name)
        wanted_rv = scale["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise status.modified(rt.qualified, name)
        return self._write_replicas(rt, namespace, name, old, scale, ctx)

    def _patch_scale(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        old: Obj,
        patch_type: str,
        body: Any,
        ctx: WriteContext,
    ) -> Obj:
        current = self.scale_of(rt, old)
        if patch_type == PATCH_JSON:
            patched = patches.json_patch(current, body)
        elif patch_type == PATCH_MERGE:
            patched = patches.merge_patch(current, body)
        else:
            patched = patches.strategic_merge_patch(current, body, SCALE_DEFINITION)
        scale = self.decode(rt, patched, ctx, SCALE_DEFINITION, "Scale", "autoscaling/v1")
        return self._write_replicas(rt, namespace, name, old, scale, ctx)

    def _write_replicas(
        self, rt: ResourceType, namespace: str, name: str, old: Obj, scale: Obj, ctx: WriteContext
    ) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise status.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                        "field": "spec.replicas",
                    }
                ],
            )
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        saved = self._commit_update(rt, namespace, name, old, new, ctx, "scale", None)
        return self.scale_of(rt, saved)

    # -- delete -------------------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> Obj:
        """The deleted object (or one marked for deletion), or a Success Status."""
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        if opts.precondition_uid and opts.precondition_uid != meta["uid"]:
            raise status.conflict(
                rt.qualified,
                name,
                f"Precondition failed: UID in precondition: {opts.precondition_uid}, UID in object "
                f"meta: {meta['uid']}",
            )
        if opts.precondition_rv and opts.precondition_rv != meta["resourceVersion"]:
            raise status.conflict(
                rt.qualified,
                name,
                f"Precondition failed: ResourceVersion in precondition: {opts.precondition_rv}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if rt.key == NAMESPACES and name in ("default", "kube-system", "kube-public"):
            raise status.forbidden("namespaces", name, "this namespace may not be deleted")
        key = self._key(rt, namespace, name)
        new = copy.deepcopy(obj)
        new_meta = new["metadata"]
        finalizers = list(new_meta.get("finalizers") or [])
        graceful = False
        if rt.key == "/pods":
            grace = opts.grace_seconds
            if grace is None:
                grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            if meta.get("deletionTimestamp") and grace != 0:
                return obj
            if (
                grace
                and (obj.get("spec") or {}).get("nodeName")
                and ((obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
            ):
                graceful = True
                at = naming.utcnow()
                import datetime as _dt

                new_meta["deletionTimestamp"] = naming.timestamp(at + _dt.timedelta(seconds=grace))
                new_meta["deletionGracePeriodSeconds"] = grace
        if opts.propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        elif opts.propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if rt.key == NAMESPACES:
            if not meta.get("deletionTimestamp"):
                new_meta["deletionTimestamp"] = naming.timestamp()
                new["status"] = {"phase": "Terminating"}
                if not opts.dry_run:
                    new_meta["resourceVersion"] = str(self.store.next_rv())
                    self.store.put(rt.key, key, new)
                return new
            return obj
        if finalizers or graceful:
            if (
                meta.get("deletionTimestamp")
                and not graceful
                and finalizers == list(meta.get("finalizers") or [])
            ):
                return obj
            new_meta["finalizers"] = finalizers
            new_meta.setdefault("deletionTimestamp", naming.timestamp())
            new_meta.setdefault("deletionGracePeriodSeconds", 0)
            if opts.dry_run:
                return new
            new_meta["resourceVersion"] = str(self.store.next_rv())
            self.store.put(rt.key, key, new)
            return new
        if opts.dry_run:
            return obj if rt.returns_deleted else status.success(rt.qualified, name, meta["uid"])
        new_meta["resourceVersion"] = str(self.store.next_rv())
        self.store.remove(rt.key, key, new)
        self.strategy(rt).release(new)
        if rt.returns_deleted:
            return new
        return status.success(rt.qualified, name, meta["uid"])

    def force_remove(self, rt: ResourceType, namespace: str, name: str) -> None:
        """Remove at once (the kubelet after a graceful pod deletion, the namespace finalizer)."""
        key = self._key(rt, namespace, name)
        obj = self.store.get(rt.key, key)
        if obj is None:
            return
        last = copy.deepcopy(obj)
        last["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.remove(rt.key, key, last)
        self.strategy(rt).release(last)


def _sort_key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: Obj) -> Obj:
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": meta}


def _same(old: Obj, new: Obj) -> bool:
    if _comparable(old) != _comparable(new):
        return False
    strip = [
        {k: v for k, v in e.items() if k != "time"}
        for e in (old.get("metadata", {}).get("managedFields") or [])
    ]
    new_strip = [
        {k: v for k, v in e.items() if k != "time"}
        for e in (new.get("metadata", {}).get("managedFields") or [])
    ]
    return strip == new_strip
