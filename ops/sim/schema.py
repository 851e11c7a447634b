"""The built-in kinds' schemas (Kubernetes v1.33), and questions asked of them.

The definitions come from the `kubernetes-validate` package, which ships the upstream OpenAPI
definitions (descriptions, required fields, list types, merge keys, group-version-kinds) as JSON
Schema. The simulator uses them for strict decoding, strategic merge, server-side apply and the
OpenAPI documents it serves, so every one of those agrees with the real API.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "v1.33.0"

Node = dict[str, Any]


@functools.cache
def definitions() -> dict[str, Node]:
    """All definitions by OpenAPI name ("io.k8s.api.core.v1.Pod"); read once per process."""
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (base / f"{SCHEMA_VERSION}-local" / "_definitions.json").read_text()
    return json.loads(text)["$defs"]


def ref_name(node: Node) -> str | None:
    ref = node.get("$ref")
    if not ref:
        return None
    return ref.rsplit("/", 1)[-1]


def resolve(node: Node | None) -> Node | None:
    """Follow a $ref (keeping nothing of the referring node but its target)."""
    if node is None:
        return None
    name = ref_name(node)
    if name:
        return definitions().get(name)
    return node


def base_type(node: Node | None) -> str:
    """'object', 'array', 'string', 'integer', 'number', 'boolean', 'int-or-string',
    'quantity' or 'any'."""
    if node is None:
        return "any"
    name = ref_name(node)
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
        return "int-or-string"
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
        return "quantity"
    node = resolve(node)
    if node is None:
        return "any"
    typ = node.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), None)
    return typ or "any"


def is_free_form(node: Node | None) -> bool:
    node = resolve(node)
    if node is None:
        return True
    return (
        base_type(node) in ("object", "any")
        and "properties" not in node
        and "additionalProperties" not in node
    )


def field(node: Node | None, name: str) -> Node | None:
    """The schema of `name` inside an object node (a property or a map value)."""
    node = resolve(node)
    if node is None:
        return None
    props = node.get("properties")
    if props is not None:
        return props.get(name)
    return node.get("additionalProperties")


def has_field(node: Node | None, name: str) -> bool:
    node = resolve(node)
    if node is None:
        return True
    if "properties" in node:
        return name in node["properties"]
    return True


def items(node: Node | None) -> Node | None:
    node = resolve(node) if node and "$ref" in node else node
    if node is None:
        return None
    return node.get("items")


def list_keys(node: Node | None) -> list[str] | None:
    """Keys of an associative list (x-kubernetes-list-map-keys or the patch merge key)."""
    if node is None:
        return None
    keys = node.get("x-kubernetes-list-map-keys")
    if keys:
        return list(keys)
    key = node.get("x-kubernetes-patch-merge-key")
    if key:
        return [key]
    return None


def list_type(node: Node | None) -> str:
    """'map', 'set' or 'atomic' (the default for lists), as server-side apply treats them."""
    if node is None:
        return "atomic"
    typ = node.get("x-kubernetes-list-type")
    if typ:
        return typ
    if node.get("x-kubernetes-patch-merge-key"):
        return "map"
    return "atomic"


def merge_key(node: Node | None) -> str | None:
    """The strategic-merge key of a list, if its patch strategy merges."""
    if node is None:
        return None
    strategy = node.get("x-kubernetes-patch-strategy", "")
    if "merge" in strategy.split(","):
        return node.get("x-kubernetes-patch-merge-key")
    return None


def patch_strategy(node: Node | None) -> set[str]:
    if node is None:
        return set()
    return set(filter(None, node.get("x-kubernetes-patch-strategy", "").split(",")))


def is_atomic_map(node: Node | None) -> bool:
    if node is None:
        return False
    target = resolve(node) or {}
    return node.get("x-kubernetes-map-type") == "atomic" or (
        target.get("x-kubernetes-map-type") == "atomic"
    )


def go_type(node: Node | None) -> str:
    """The Go type name kube-apiserver's decoder would mention in an error."""
    typ = base_type(node)
    target = resolve(node) or {}
    fmt = target.get("format") or (node or {}).get("format")
    if typ == "integer":
        return fmt or "int"
    if typ == "number":
        return "float64"
    if typ == "boolean":
        return "bool"
    if typ == "array":
        return "[]" + go_type(items(node))
    if typ == "object":
        name = ref_name(node) if node else None
        if name:
            return name.rsplit(".", 1)[-1]
        return "map[string]" + go_type(field(node, "x"))
    if typ in ("int-or-string", "quantity"):
        return "IntOrString" if typ == "int-or-string" else "Quantity"
    return "string"


def short_name(definition: str) -> str:
    return definition.rsplit(".", 1)[-1]
