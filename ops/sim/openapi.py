"""OpenAPI v3 documents for the served group-versions, built from the upstream definitions.

kubectl uses them for `explain`, to learn that PATCH accepts `fieldValidation` (so validation is
done server-side), and for client-side apply's strategic merge. Paths carry the
x-kubernetes-action and x-kubernetes-group-version-kind extensions kubectl looks for.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from ops.sim import schema
from ops.sim.resources import EXTRA_DEFINITIONS, TYPES, Catalog, ResourceType

Obj = dict[str, Any]
PREFIX = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
ALWAYS = (
    META + "Status",
    META + "DeleteOptions",
    META + "Patch",
    META + "WatchEvent",
    META + "APIResourceList",
)


def _convert(node: Any, parent_key: str = "") -> Any:
    if isinstance(node, list):
        return [_convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    ref = schema.ref_name(node)
    if ref:
        extra = {k: _convert(v, k) for k, v in node.items() if k != "$ref"}
        if not extra:
            return {"$ref": PREFIX + ref}
        return (
            {"allOf": [{"$ref": PREFIX + ref}], **extra, "default": {}}
            if "description" in extra
            else {"allOf": [{"$ref": PREFIX + ref}], **extra}
        )
    out: Obj = {}
    for key, value in node.items():
        if key == "type":
            types = [t for t in value if t != "null"] if isinstance(value, list) else [value]
            if types:
                out["type"] = types[0]
        elif key == "properties":
            props = {}
            for name, prop in value.items():
                converted = _convert(prop)
                if name in ("apiVersion", "kind") and isinstance(converted, dict):
                    converted.pop("enum", None)
                props[name] = converted
            out["properties"] = props
        else:
            out[key] = _convert(value, key)
    return out


def _definition(name: str) -> Obj:
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
        return {
            "description": schema.definitions()[name].get("description", ""),
            "type": "string",
            "format": "int-or-string",
        }
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
        return {"description": schema.definitions()[name].get("description", ""), "type": "string"}
    return _convert(schema.definitions()[name])


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = schema.ref_name(node)
        if ref and ref not in out:
            out.add(ref)
            _refs(schema.definitions().get(ref, {}), out)
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def _list_definition(rt: ResourceType) -> str:
    return rt.definition + "List"


def _param(
    name: str,
    where: str = "query",
    description: str = "",
    typ: str = "string",
    required: bool = False,
) -> Obj:
    p: Obj = {
        "name": name,
        "in": where,
        "description": description,
        "schema": {"type": typ, "uniqueItems": True},
    }
    if required:
        p["required"] = True
    return p


_WRITE = [
    _param(
        "dryRun", description="When present, indicates that modifications should not be persisted."
    ),
    _param(
        "fieldManager",
        description="fieldManager is a name associated with the actor or entity that is making "
        "these changes.",
    ),
    _param(
        "fieldValidation",
        description="fieldValidation instructs the server on how to handle objects in the "
        "request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: "
        "- Ignore - Warn - Strict",
    ),
]
_LIST = [
    _param(n)
    for n in (
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    )
]


def _op(
    rt: ResourceType,
    action: str,
    op_id: str,
    response: str,
    params: list[Obj],
    body: str | None = None,
    kind: str = "",
    group: str | None = None,
    version: str | None = None,
) -> Obj:
    content = {
        "application/json": {"schema": {"$ref": PREFIX + response}},
        "application/yaml": {"schema": {"$ref": PREFIX + response}},
    }
    op: Obj = {
        "tags": [f"{rt.group.split('.')[0] or 'core'}_{rt.version}"],
        "description": f"{action} {kind or rt.kind}",
        "operationId": op_id,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": content},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": rt.group if group is None else group,
            "version": rt.version if version is None else version,
            "kind": kind or rt.kind,
        },
    }
    if body == "patch":
        op["requestBody"] = {
            "content": {
                t: {"schema": {"$ref": PREFIX + META + "Patch"}}
                for t in (
                    "application/apply-patch+yaml",
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                )
            },
            "required": True,
        }
        op["parameters"] = [*params, _param("force", typ="boolean")]
    elif body:
        op["requestBody"] = {
            "content": {"*/*": {"schema": {"$ref": PREFIX + body}}},
            "required": True,
        }
    return op


def _paths(rt: ResourceType) -> dict[str, Obj]:
    base = "/api/v1" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    ns = "/namespaces/{namespace}" if rt.namespaced else ""
    coll = f"{base}{ns}/{rt.plural}"
    item = f"{coll}/{{name}}"
    name = rt.kind
    paths: dict[str, Obj] = {}
    ns_param = [_param("namespace", "path", required=True)] if rt.namespaced else []
    name_param = [_param("name", "path", required=True)]
    if "create" in rt.verbs and "list" not in rt.verbs:
        paths[coll] = {
            "post": _op(rt, "post", f"create{name}", rt.definition, _WRITE, rt.definition),
            "parameters": ns_param,
        }
        return paths
    coll_ops: Obj = {"parameters": ns_param}
    if "list" in rt.verbs:
        coll_ops["get"] = _op(rt, "list", f"list{name}", _list_definition(rt), _LIST)
    if "create" in rt.verbs:
        coll_ops["post"] = _op(rt, "post", f"create{name}", rt.definition, _WRITE, rt.definition)
    if "deletecollection" in rt.verbs:
        coll_ops["delete"] = _op(
            rt,
            "deletecollection",
            f"deletecollection{name}",
            META + "Status",
            _LIST,
            META + "DeleteOptions",
        )
    paths[coll] = coll_ops
    item_ops: Obj = {"parameters": name_param + ns_param}
    item_ops["get"] = _op(rt, "get", f"read{name}", rt.definition, [])
    if "update" in rt.verbs:
        item_ops["put"] = _op(rt, "put", f"replace{name}", rt.definition, _WRITE, rt.definition)
    if "patch" in rt.verbs:
        item_ops["patch"] = _op(rt, "patch", f"patch{name}", rt.definition, _WRITE, "patch")
    if "delete" in rt.verbs:
        item_ops["delete"] = _op(
            rt,
            "delete",
            f"delete{name}",
            META + "Status",
            [_param("gracePeriodSeconds", typ="integer"), _param("propagationPolicy")],
            META + "DeleteOptions",
        )
    paths[item] = item_ops
    if rt.namespaced and "list" in rt.verbs:
        paths[f"{base}/{rt.plural}"] = {
            "get": _op(rt, "list", f"list{name}ForAllNamespaces", _list_definition(rt), _LIST)
        }
    for sub in rt.subresources:
        path = f"{item}/{sub.name}"
        if sub.name == "status":
            paths[path] = {
                "parameters": name_param + ns_param,
                "get": _op(rt, "get", f"read{name}Status", rt.definition, []),
                "put": _op(rt, "put", f"replace{name}Status", rt.definition, _WRITE, rt.definition),
                "patch": _op(rt, "patch", f"patch{name}Status", rt.definition, _WRITE, "patch"),
            }
        elif sub.name == "scale":
            scale = "io.k8s.api.autoscaling.v1.Scale"
            paths[path] = {
                "parameters": name_param + ns_param,
                "get": _op(
                    rt,
                    "get",
                    f"read{name}Scale",
                    scale,
                    [],
                    kind="Scale",
                    group="autoscaling",
                    version="v1",
                ),
                "put": _op(
                    rt,
                    "put",
                    f"replace{name}Scale",
                    scale,
                    _WRITE,
                    scale,
                    kind="Scale",
                    group="autoscaling",
                    version="v1",
                ),
                "patch": _op(
                    rt,
                    "patch",
                    f"patch{name}Scale",
                    scale,
                    _WRITE,
                    "patch",
                    kind="Scale",
                    group="autoscaling",
                    version="v1",
                ),
            }
    return paths


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


@functools.cache
def document(group: str, version: str, server_version: str) -> bytes:
    """The OpenAPI v3 document of one group-version, serialized (it never changes)."""
    types = [t for t in TYPES if t.group == group and t.version == version]
    names: set[str] = set(ALWAYS)
    paths: dict[str, Obj] = {}
    for rt in types:
        names.add(rt.definition)
        if "list" in rt.verbs:
            names.add(_list_definition(rt))
        paths.update(_paths(rt))
    names.update(EXTRA_DEFINITIONS.values())
    for name in list(names):
        _refs(schema.definitions().get(name, {}), names)
    components = {n: _definition(n) for n in sorted(names) if n in schema.definitions()}
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": server_version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def doc_hash(group: str, version: str, server_version: str) -> str:
    return hashlib.sha512(document(group, version, server_version)).hexdigest().upper()


def index(catalog: Catalog, server_version: str) -> Obj:
    paths = {}
    for group, versions in catalog.groups():
        for version in versions:
            path = _gv_path(group, version)
            h = doc_hash(group, version, server_version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={h}"}
    return {"paths": paths}


def find(catalog: Catalog, path: str) -> tuple[str, str] | None:
    """(group, version) for an /openapi/v3/<path> suffix."""
    for group, versions in catalog.groups():
        for version in versions:
            if _gv_path(group, version) == path:
                return group, version
    return None
