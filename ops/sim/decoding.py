"""Request bodies to objects: JSON/YAML parsing, size limits, strict field and type checks.

Unknown fields are dropped (as Go's decoder drops them) and reported, so the caller can fail
(fieldValidation=Strict), warn (Warn, the default) or ignore them. Type mismatches are always a
400 with the message Go's JSON decoder gives.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from ops.sim import schema, status

MAX_BODY = 3 * 1024 * 1024

JSON_TYPES = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}


def parse(raw: bytes, content_type: str) -> Any:
    """Parse a JSON or YAML body; malformed input is a 400 BadRequest."""
    text_type = content_type.split(";")[0].strip().lower()
    if text_type == "application/vnd.kubernetes.protobuf":
        from ops.sim import protobuf

        return protobuf.decode(raw)
    if "yaml" in text_type:
        try:
            docs = [d for d in yaml.safe_load_all(raw.decode("utf-8"))]
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise status.bad_request(f"error converting YAML to JSON: {_yaml_msg(exc)}") from exc
        docs = [d for d in docs if d is not None]
        if not docs:
            raise status.bad_request("Object 'Kind' is missing in '{}'")
        return docs[0]
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise status.bad_request(
            f"couldn't get version/kind; json parse error: {_json_msg(exc)}"
        ) from exc


def _json_msg(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        if exc.pos >= len(exc.doc):
            return "unexpected end of JSON input"
        ch = exc.doc[exc.pos]
        return f"invalid character '{ch}' looking for beginning of value"
    return "invalid UTF-8 in JSON input"


def _yaml_msg(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"yaml: line {mark.line + 1}: {problem}"
    return f"yaml: {problem}"


class DecodeResult:
    def __init__(self, obj: Any, unknown: list[str]) -> None:
        self.obj = obj
        self.unknown = unknown


_SKIP_TOP = {"apiVersion", "kind"}


def check(obj: Any, definition: str) -> DecodeResult:
    """Walk `obj` against the named definition: prune unknown fields, raise on wrong types."""
    unknown: list[str] = []
    node = {"$ref": f"#/$defs/{definition}"}
    pruned = _walk(obj, node, "", schema.short_name(definition), unknown)
    return DecodeResult(pruned, unknown)


def _type_error(value: Any, node: schema.Node, path: str, struct: str) -> Exception:
    jtype = JSON_TYPES.get(type(value), "value")
    if jtype == "number" and isinstance(value, float):
        jtype = f"number {value}"
    where = f"Go struct field {struct}.{path}" if path else "Go value"
    return status.bad_request(
        f"json: cannot unmarshal {jtype} into {where} of type {schema.go_type(node)}"
    )


def _walk(value: Any, node: schema.Node, path: str, struct: str, unknown: list[str]) -> Any:
    if value is None:
        return None
    typ = schema.base_type(node)
    if typ == "any" or (
        schema.is_free_form(node) and typ in ("object", "any") and isinstance(value, dict)
    ):
        return value
    if typ == "object":
        if not isinstance(value, dict):
            raise _type_error(value, node, path, struct)
        target = schema.resolve(node) or {}
        name = schema.ref_name(node)
        inner_struct = schema.short_name(name) if name else struct
        out = {}
        if "properties" in target:
            for k, v in value.items():
                sub = target["properties"].get(k)
                child = f"{path}.{k}" if path else k
                if sub is None:
                    if not (path == "" and k in _SKIP_TOP):
                        unknown.append(child)
                    else:
                        out[k] = v
                    continue
                out[k] = _walk(v, sub, child, inner_struct, unknown)
            return out
        sub = target.get("additionalProperties")
        for k, v in value.items():
            if not isinstance(k, str):
                raise status.bad_request(
                    "json: cannot unmarshal number into Go value of type string"
                )
            out[k] = _walk(v, sub, f"{path}.{k}" if path else k, struct, unknown) if sub else v
        return out
    if typ == "array":
        if not isinstance(value, list):
            raise _type_error(value, node, path, struct)
        sub = schema.items(node)
        return [_walk(v, sub, f"{path}[{i}]", struct, unknown) for i, v in enumerate(value)]
    if typ == "string":
        if not isinstance(value, str):
            raise _type_error(value, node, path, struct)
    elif typ == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _type_error(value, node, path, struct)
    elif typ == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, node, path, struct)
    elif typ == "boolean":
        if not isinstance(value, bool):
            raise _type_error(value, node, path, struct)
    elif typ == "int-or-string":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _type_error(value, node, path, struct)
    elif typ == "quantity":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _type_error(value, node, path, struct)
        if not isinstance(value, str):
            return str(value)
    return value
