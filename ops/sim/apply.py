"""Server-side apply and managedFields, driven by the built-in schemas.

Field ownership is kept as sets of paths whose elements are the FieldsV1 keys themselves
("f:spec", 'k:{"name":"app"}', 'v:"x"'). A path is owned when it is a leaf of what a manager
wrote or an item of an associative list. Apply merges the applied configuration into the live
object (maps by key, associative lists by their keys, sets by value, anything else replaced),
removes what the applier owned before and no longer applies (unless someone else owns it), and
refuses to change fields another manager owns unless forced, with the conflict message the real
API server gives. Non-apply writes take ownership of the fields they change.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ops.sim import schema
from ops.sim.errors import StatusError

Obj = dict[str, Any]
Path = tuple[str, ...]

IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
}
IGNORED_TOP = {"apiVersion", "kind"}


def _key_element(item: Any, keys: list[str]) -> str:
    present = {k: item[k] for k in sorted(keys) if isinstance(item, dict) and k in item}
    return "k:" + json.dumps(present, separators=(",", ":"), sort_keys=True)


def _value_element(value: Any) -> str:
    return "v:" + json.dumps(value, separators=(",", ":"), sort_keys=True)


def root(definition: str) -> schema.Node:
    return {"$ref": f"#/$defs/{definition}"}


def field_set(obj: Obj, definition: str, include_status: bool = False) -> set[Path]:
    out: set[Path] = set()
    node = root(definition)
    for key, value in obj.items():
        if key in IGNORED_TOP or (key == "status" and not include_status):
            continue
        sub = schema.field(node, key)
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in IGNORED_META}
            if not value:
                continue
        _collect(value, sub, ("f:" + key,), out)
    return out


def _granular(value: Any, node: schema.Node | None) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and schema.base_type(node) == "object"
        and not schema.is_free_form(node)
        and not schema.is_atomic_map(node)
    )


def _collect(value: Any, node: schema.Node | None, prefix: Path, out: set[Path]) -> None:
    if _granular(value, node):
        for key, sub_value in value.items():
            _collect(sub_value, schema.field(node, key), (*prefix, "f:" + key), out)
        return
    if isinstance(value, list) and value:
        kind = schema.list_type(node)
        if kind == "map":
            keys = schema.list_keys(node) or []
            item_node = schema.items(node)
            for item in value:
                item_path = (*prefix, _key_element(item, keys))
                out.add(item_path)
                if isinstance(item, dict):
                    for key, sub_value in item.items():
                        _collect(
                            sub_value, schema.field(item_node, key), (*item_path, "f:" + key), out
                        )
            return
        if kind == "set":
            for item in value:
                out.add((*prefix, _value_element(item)))
            return
    out.add(prefix)


# -- FieldsV1 <-> path sets -------------------------------------------------------------------


def to_fields_v1(paths: set[Path]) -> Obj:
    tree: Obj = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:
        node = tree
        for element in path:
            node = node[element]
        if node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(tree: Obj) -> Obj:
    return {k: _sorted_tree(tree[k]) for k in sorted(tree, key=lambda k: (k != ".", k))}


def from_fields_v1(tree: Obj) -> set[Path]:
    out: set[Path] = set()

    def walk(node: Obj, prefix: Path) -> None:
        if not node:
            if prefix:
                out.add(prefix)
            return
        for element, child in node.items():
            if element == ".":
                out.add(prefix)
            else:
                walk(child or {}, (*prefix, element))

    walk(tree, ())
    return out


# -- navigating by path -----------------------------------------------------------------------

_MISSING = object()


def _find_item(items: list, element: str) -> int | None:
    if element.startswith("k:"):
        keys = json.loads(element[2:])
        for i, item in enumerate(items):
            if isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items()):
                return i
    elif element.startswith("v:"):
        value = json.loads(element[2:])
        for i, item in enumerate(items):
            if item == value:
                return i
    return None


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for element in path:
        if element.startswith("f:"):
            if not isinstance(cur, dict) or element[2:] not in cur:
                return _MISSING
            cur = cur[element[2:]]
        else:
            if not isinstance(cur, list):
                return _MISSING
            index = _find_item(cur, element)
            if index is None:
                return _MISSING
            cur = cur[index]
    return cur


def remove_paths(obj: Obj, paths: set[Path]) -> Obj:
    result = copy.deepcopy(obj)
    for path in sorted(paths, key=len):  # parents first: items go whole
        _remove(result, path)
    return result


def _remove(obj: Obj, path: Path) -> None:
    trail: list[tuple[Any, Any]] = []
    cur: Any = obj
    for element in path[:-1]:
        if element.startswith("f:"):
            if not isinstance(cur, dict) or element[2:] not in cur:
                return
            trail.append((cur, element[2:]))
            cur = cur[element[2:]]
        else:
            if not isinstance(cur, list):
                return
            index = _find_item(cur, element)
            if index is None:
                return
            trail.append((cur, index))
            cur = cur[index]
    last = path[-1]
    if last.startswith("f:"):
        if isinstance(cur, dict):
            cur.pop(last[2:], None)
    elif isinstance(cur, list):
        index = _find_item(cur, last)
        if index is not None:
            cur.pop(index)
    # prune containers the removal left empty (never the top level)
    for parent, key in reversed(trail[1:]):
        child = parent[key]
        if child in ({}, []):
            if isinstance(parent, dict):
                parent.pop(key, None)
            else:
                parent.pop(key)
        else:
            break


def merge(live: Any, config: Any, node: schema.Node | None) -> Any:
    if isinstance(config, dict) and isinstance(live, dict) and _granular(config, node):
        result = dict(live)
        for key, value in config.items():
            result[key] = merge(live.get(key), value, schema.field(node, key))
        return result
    if isinstance(config, list) and isinstance(live, list):
        kind = schema.list_type(node)
        if kind == "map":
            keys = schema.list_keys(node) or []
            item_node = schema.items(node)
            result = list(live)
            for item in config:
                index = _find_item(result, _key_element(item, keys))
                if index is None:
                    result.append(copy.deepcopy(item))
                else:
                    result[index] = merge(result[index], item, item_node)
            return result
        if kind == "set":
            return list(live) + [copy.deepcopy(v) for v in config if v not in live]
    return copy.deepcopy(config)


# -- managedFields entries ----------------------------------------------------------------------


class Managed:
    """An object's managedFields as (manager, operation, subresource) -> (paths, entry)."""

    def __init__(self, entries: list[Obj] | None) -> None:
        self.entries: list[tuple[Obj, set[Path]]] = []
        for entry in entries or []:
            paths = from_fields_v1(entry.get("fieldsV1") or {})
            self.entries.append((dict(entry), paths))

    @staticmethod
    def _same(entry: Obj, manager: str, operation: str, subresource: str) -> bool:
        return (
            entry.get("manager") == manager
            and entry.get("operation") == operation
            and entry.get("subresource", "") == subresource
        )

    def owned_by(self, manager: str, operation: str, subresource: str = "") -> set[Path]:
        for entry, paths in self.entries:
            if self._same(entry, manager, operation, subresource):
                return set(paths)
        return set()

    def others(
        self, manager: str, operation: str, subresource: str = ""
    ) -> list[tuple[Obj, set[Path]]]:
        return [
            (e, p) for e, p in self.entries if not self._same(e, manager, operation, subresource)
        ]

    def set_owner(
        self,
        manager: str,
        operation: str,
        subresource: str,
        paths: set[Path],
        api_version: str,
        now: str,
    ) -> None:
        kept = [
            (e, p) for e, p in self.entries if not self._same(e, manager, operation, subresource)
        ]
        entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
        }
        if subresource:
            entry["subresource"] = subresource
        existing = next(
            (
                i
                for i, (e, _) in enumerate(self.entries)
                if self._same(e, manager, operation, subresource)
            ),
            None,
        )
        if paths:
            if existing is None:
                kept.append((entry, paths))
            else:
                kept.insert(existing, (entry, paths))
        self.entries = kept

    def strip(self, paths: set[Path]) -> None:
        self.entries = [(e, p - paths) for e, p in self.entries]
        self.entries = [(e, p) for e, p in self.entries if p]

    def render(self) -> list[Obj]:
        out = []
        for entry, paths in self.entries:
            rendered = dict(entry)
            rendered["fieldsV1"] = to_fields_v1(paths)
            out.append(rendered)
        return out


def path_string(path: Path) -> str:
    """ ".spec.containers[name="app"].image", as conflict messages print paths."""
    out = []
    for element in path:
        if element.startswith("f:"):
            out.append("." + element[2:])
        elif element.startswith("k:"):
            keys = json.loads(element[2:])
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        else:
            out.append("[" + element[2:] + "]")
    return "".join(out)


def conflict_error(
    conflicts: list[tuple[str, str, Path]], qualified: str, name: str
) -> StatusError:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{manager}" using {api_version}',
            "field": path_string(path),
        }
        for manager, api_version, path in conflicts
    ]
    if len(conflicts) == 1:
        manager, api_version, path = conflicts[0]
        message = (
            f'Apply failed with 1 conflict: conflict with "{manager}" using {api_version}: '
            f"{path_string(path)}"
        )
    else:
        lines = [f"Apply failed with {len(conflicts)} conflicts:"]
        by_manager: dict[tuple[str, str], list[Path]] = {}
        for manager, api_version, path in conflicts:
            by_manager.setdefault((manager, api_version), []).append(path)
        for (manager, api_version), paths in by_manager.items():
            lines.append(f'conflicts with "{manager}" using {api_version}:')
            lines.extend(f"- {path_string(p)}" for p in paths)
        message = "\n".join(lines)
    resource, _, group = qualified.partition(".")
    details: dict[str, Any] = {"name": name, "kind": resource, "causes": causes}
    if group:
        details["group"] = group
    return StatusError(409, "Conflict", message, details)


def apply(
    live: Obj | None,
    config: Obj,
    definition: str,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
    qualified: str,
    name: str,
    subresource: str = "",
) -> Obj:
    """The object after applying `config` for `manager`, with updated managedFields."""
    live = live or {}
    include_status = subresource == "status"
    config_set = field_set(config, definition, include_status)
    managed = Managed((live.get("metadata") or {}).get("managedFields"))
    conflicts: list[tuple[str, str, Path]] = []
    taken: set[Path] = set()
    for entry, paths in managed.others(manager, "Apply", subresource):
        for path in sorted(paths & config_set):
            if path[-1][:2] in ("k:", "v:"):
                continue  # an item both sides have: its fields are compared on their own
            if value_at(live, path) != value_at(config, path):
                if force:
                    taken.add(path)
                else:
                    conflicts.append((entry["manager"], entry.get("apiVersion", ""), path))
    if conflicts:
        raise conflict_error(conflicts, qualified, name)
    previous = managed.owned_by(manager, "Apply", subresource)
    others: set[Path] = set()
    for _, paths in managed.others(manager, "Apply", subresource):
        others |= paths
    leaves = {q for q in config_set if q[-1][:2] not in ("k:", "v:")}
    stale = {
        p
        for p in previous - config_set - others
        if not any(p[: len(q)] == q for q in leaves if len(q) < len(p))
    }
    result = remove_paths(live, stale) if stale else copy.deepcopy(live)
    node = root(definition)
    for key, value in config.items():
        if key in IGNORED_TOP:
            result[key] = value
            continue
        if key == "status" and not include_status:
            continue
        result[key] = merge(result.get(key), value, schema.field(node, key))
    if taken:
        for i, (entry, paths) in enumerate(managed.entries):
            if not Managed._same(entry, manager, "Apply", subresource):
                managed.entries[i] = (entry, paths - taken)
        managed.entries = [(e, p) for e, p in managed.entries if p]
    managed.set_owner(manager, "Apply", subresource, config_set, api_version, now)
    result.setdefault("metadata", {})["managedFields"] = managed.render()
    return result


def record_update(
    old: Obj | None,
    new: Obj,
    definition: str,
    manager: str,
    api_version: str,
    now: str,
    subresource: str = "",
) -> list[Obj]:
    """managedFields after a non-apply write by `manager` turned `old` into `new`."""
    include_status = subresource == "status"
    managed = Managed(((old or {}).get("metadata") or {}).get("managedFields"))
    old_set = field_set(old, definition, include_status) if old else set()
    new_set = field_set(new, definition, include_status)
    changed = {p for p in new_set if p not in old_set or value_at(old, p) != value_at(new, p)}
    removed = old_set - new_set
    mine = managed.owned_by(manager, "Update", subresource)
    managed.strip(changed | removed)
    managed.set_owner(manager, "Update", subresource, (mine - removed) | changed, api_version, now)
    return managed.render()
