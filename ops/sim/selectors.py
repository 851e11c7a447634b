"""Label and field selectors with Kubernetes' syntax and semantics.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma = AND.
Field selectors: `f=v`, `f==v`, `f!=v`, comma = AND; which fields exist depends on the resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ops.sim import status

Obj = dict[str, Any]

_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$"
)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        return not has


class LabelSelector:
    def __init__(self, requirements: list[Requirement]) -> None:
        self.requirements = requirements

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls([])


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str, text: str) -> None:
    if not _KEY.match(key):
        raise status.bad_request(f'unable to parse requirement: invalid label key "{key}"')


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise status.bad_request(f'unable to parse requirement: invalid label value: "{value}"')


_SET = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse `?labelSelector=`; bad syntax is a 400 like kube-apiserver's."""
    if not text or not text.strip():
        return LabelSelector.everything()
    requirements: list[Requirement] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise status.bad_request(
                f"unable to parse requirement: found '', expected: identifier in {text!r}"
            )
        if m := _SET.match(part):
            key, op, values = m.group(1), m.group(2), m.group(3)
            vals = tuple(v.strip() for v in values.split(",") if v.strip() or values.strip())
            _check_key(key, text)
            for v in vals:
                _check_value(v)
            requirements.append(Requirement(key, op, vals))
            continue
        for op, name in (("!=", "!="), ("==", "="), ("=", "=")):
            if op in part:
                key, _, value = part.partition(op)
                key, value = key.strip(), value.strip()
                _check_key(key, text)
                _check_value(value)
                requirements.append(Requirement(key, name, (value,)))
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                _check_key(key, text)
                requirements.append(Requirement(key, "!"))
            else:
                _check_key(part, text)
                requirements.append(Requirement(part, "exists"))
    return LabelSelector(requirements)


def selector_from_struct(selector: dict[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector ({matchLabels, matchExpressions}) as a LabelSelector."""
    if not selector:
        return LabelSelector.everything()
    reqs = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(
            Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        )
    return LabelSelector(reqs)


def selector_string(selector: dict[str, Any] | None) -> str:
    """Render a metav1.LabelSelector the way kubectl prints it (Selector column)."""
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{expr['key']} {op.lower()} ({','.join(expr.get('values') or [])})")
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append(f"!{expr['key']}")
    return ",".join(parts) or "<none>"


# -- field selectors ---------------------------------------------------------------------------


def _get(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_COMMON = ("metadata.name", "metadata.namespace")
FIELDS: dict[str, tuple[str, ...]] = {
    "/pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "/events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "/secrets": ("type",),
    "/namespaces": ("status.phase",),
    "/nodes": ("spec.unschedulable",),
    "apps/replicasets": ("status.replicas",),
}

_SPECIAL = {"source": "source.component", "spec.hostNetwork": "spec.hostNetwork"}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str
    value: str


class FieldSelector:
    def __init__(self, requirements: list[FieldRequirement]) -> None:
        self.requirements = requirements

    @property
    def empty(self) -> bool:
        return not self.requirements

    def name(self) -> str | None:
        """The metadata.name it pins, if any (lets a list read one key)."""
        for r in self.requirements:
            if r.field == "metadata.name" and r.op == "=":
                return r.value
        return None

    def matches(self, obj: Obj) -> bool:
        for r in self.requirements:
            value = _get(obj, _SPECIAL.get(r.field, r.field))
            if r.field == "spec.hostNetwork" and value == "":
                value = "false"
            if (value == r.value) != (r.op == "="):
                return False
        return True


def parse_field_selector(text: str | None, resource_key: str) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector([])
    allowed = _COMMON + FIELDS.get(resource_key, ())
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        op = next((o for o in ("!=", "==", "=") if o in part), None)
        if op is not None:
            fld, _, value = part.partition(op)
            fld = fld.strip()
            name = "!=" if op == "!=" else "="
        else:
            raise status.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if fld not in allowed:
            raise status.bad_request(f"field label not supported: {fld}")
        reqs.append(FieldRequirement(fld, name, value.strip()))
    return FieldSelector(reqs)


Matcher = Callable[[Obj], bool]


def matcher(labels: LabelSelector, fields: FieldSelector) -> Matcher:
    def match(obj: Obj) -> bool:
        return labels.matches(obj.get("metadata", {}).get("labels")) and fields.matches(obj)

    return match
