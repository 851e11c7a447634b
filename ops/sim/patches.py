"""The three PATCH flavours kube-apiserver accepts besides apply: JSON merge (RFC 7386), JSON
patch (RFC 6902, via the `jsonpatch` library) and strategic merge, whose list semantics
(merge keys, $patch, $setElementOrder, $retainKeys, $deleteFromPrimitiveList) come from the
built-in schemas.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from ops.sim import schema, status

Obj = dict[str, Any]


def merge_patch(original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(original: Obj, patch: Any) -> Obj:
    if not isinstance(patch, list):
        raise status.bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    try:
        return jsonpatch.apply_patch(original, patch, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise status.StatusError(422, "Invalid", f"testing value failed: {exc}") from exc
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
        raise status.StatusError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
        ) from exc
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as exc:
        raise status.bad_request(f"error decoding patch: {exc}") from exc


_DELETE = object()


def strategic_merge_patch(original: Obj, patch: Any, definition: str) -> Obj:
    if not isinstance(patch, dict):
        raise status.bad_request(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    node = {"$ref": f"#/$defs/{definition}"}
    result = _merge_map(original, patch, node)
    return {} if result is _DELETE else result


def _merge_map(original: Any, patch: Obj, node: schema.Node | None) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(original) if isinstance(original, dict) else {}
    orders: dict[str, list] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            fld = key.split("/", 1)[1]
            if isinstance(result.get(fld), list) and isinstance(value, list):
                result[fld] = [v for v in result[fld] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = schema.field(node, key) if node is not None else None
        if isinstance(value, dict):
            if "replace" in schema.patch_strategy(sub):
                result[key] = {k: v for k, v in value.items() if k != "$patch"}
                continue
            merged = _merge_map(result.get(key), value, sub)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            result[key] = copy.deepcopy(value)
    for fld, order in orders.items():
        if isinstance(result.get(fld), list):
            result[fld] = _reorder(result[fld], order, schema.field(node, fld))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list, node: schema.Node | None) -> list:
    if "merge" not in schema.patch_strategy(node) or not isinstance(original, list):
        return [_strip(v) for v in patch if not _is_directive(v)]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v) for v in patch if not _is_directive(v)]
    key = schema.merge_key(node)
    item_node = schema.items(node)
    result = list(original)
    if key is None:
        for value in patch:
            if value not in result:
                result.append(copy.deepcopy(value))
        return result
    for value in patch:
        if not isinstance(value, dict):
            continue
        match = next(
            (
                i
                for i, v in enumerate(result)
                if isinstance(v, dict) and v.get(key) == value.get(key)
            ),
            None,
        )
        if value.get("$patch") == "delete":
            if match is not None:
                result.pop(match)
            continue
        if match is None:
            result.append(_strip(value))
        else:
            merged = _merge_map(result[match], value, item_node)
            if merged is _DELETE:
                result.pop(match)
            else:
                result[match] = merged
    return result


def _is_directive(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"$patch"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _reorder(items: list, order: list, node: schema.Node | None) -> list:
    key = schema.merge_key(node)

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    ranked = [v for w in wanted for v in items if ident(v) == w]
    rest = [v for v in items if ident(v) not in wanted]
    return ranked + rest
