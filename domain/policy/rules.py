"""RBAC rule matching with Kubernetes' semantics (rbac/v1 evaluation helpers).

A rule allows a resource request when its verb, API group, resource and name all match:

- verbs: `*` or the exact verb (the empty verb of an unknown HTTP method matches only `*`);
- apiGroups: `*` or the exact group (`""` is the core group);
- resources: `*` (every resource and subresource), the exact `resource` or
  `resource/subresource`, or `*/subresource` for that subresource of any resource
  (`pods/*` is not a pattern);
- resourceNames: empty matches any name, otherwise the exact name (a list or create has no
  name, so a rule with resourceNames never allows it).

A non-resource request matches on verb and path: `*`, the exact path, or a pattern ending in
`*` that the path starts with (without its trailing stars).

`RuleSet` compiles rules once so the edge's per-request check is a dict lookup for the usual
rule shapes; it answers exactly what `rule_allows` over every rule would.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.events import Rule
from domain.policy.attributes import RequestAttributes
from domain.policy.errors import InvalidRuleError

ALL = "*"
READ_ONLY_VERBS = frozenset({"get", "list", "watch"})


def verb_matches(rule: Rule, verb: str) -> bool:
    return any(v == ALL or v == verb for v in rule.verbs)


def api_group_matches(rule: Rule, group: str) -> bool:
    return any(g == ALL or g == group for g in rule.api_groups)


def resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for r in rule.resources:
        if r == ALL or r == combined:
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url == ALL or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(rule: Rule, attrs: RequestAttributes) -> bool:
    """Kubernetes' `RuleAllows`: does this one rule allow the request?"""
    if attrs.is_resource_request:
        return (
            verb_matches(rule, attrs.verb)
            and api_group_matches(rule, attrs.api_group)
            and resource_matches(rule, attrs.combined_resource, attrs.subresource)
            and resource_name_matches(rule, attrs.name)
        )
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def check_rule(rule: Rule, *, namespaced: bool = False) -> None:
    """Raise `InvalidRuleError` for a rule kube-apiserver's validation would reject.

    `namespaced` is true for rules that will only ever be bound in namespaces (a Role), where
    non-resource URLs mean nothing.
    """
    if not rule.verbs or any(not v for v in rule.verbs):
        raise InvalidRuleError(rule, "verbs must be non-empty")
    if rule.non_resource_urls:
        if namespaced:
            raise InvalidRuleError(rule, "namespaced rules cannot apply to non-resource URLs")
        if rule.resources or rule.resource_names:
            raise InvalidRuleError(rule, "a rule cannot apply to both resources and URLs")
        for url in rule.non_resource_urls:
            if url != ALL and not url.startswith("/"):
                raise InvalidRuleError(rule, f"non-resource URL {url!r} must start with /")
            if "*" in url.rstrip("*"):
                raise InvalidRuleError(rule, f"{url!r}: `*` is only allowed at the end")
        return
    if not rule.api_groups:
        raise InvalidRuleError(rule, "resource rules must name at least one API group")
    if not rule.resources:
        raise InvalidRuleError(rule, "resource rules must name at least one resource")


def read_only(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """The same rules cut down to get/list/watch (what standing access keeps on a sensitive
    cluster); rules left without a verb are dropped."""
    out: list[Rule] = []
    for rule in rules:
        verbs = (
            sorted(READ_ONLY_VERBS)
            if ALL in rule.verbs
            else [v for v in rule.verbs if v in READ_ONLY_VERBS]
        )
        if verbs:
            out.append(
                Rule(
                    verbs=tuple(verbs),
                    api_groups=rule.api_groups,
                    resources=rule.resources,
                    resource_names=rule.resource_names,
                    non_resource_urls=rule.non_resource_urls,
                )
            )
    return tuple(out)


# (verbs or None for all, names or None for any)
_Entry = tuple[frozenset[str] | None, frozenset[str] | None]


def _verbs(rule: Rule) -> frozenset[str] | None:
    return None if ALL in rule.verbs else frozenset(rule.verbs)


class RuleSet:
    """A compiled, immutable set of rules: `allows(attrs)` == any(rule_allows(r, attrs))."""

    __slots__ = ("_exact", "_loose", "_urls", "rules")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        exact: dict[tuple[str, str], list[_Entry]] = {}
        loose: list[Rule] = []
        urls: list[Rule] = []
        for rule in self.rules:
            if rule.non_resource_urls:
                urls.append(rule)
            if not rule.resources:
                continue
            wild = ALL in rule.api_groups or any(
                r == ALL or r.startswith("*/") for r in rule.resources
            )
            if wild:
                loose.append(rule)
                continue
            entry = (_verbs(rule), frozenset(rule.resource_names) or None)
            for group in rule.api_groups:
                for resource in rule.resources:
                    exact.setdefault((group, resource), []).append(entry)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._loose = tuple(loose)
        self._urls = tuple(urls)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def allows(self, attrs: RequestAttributes) -> bool:
        if not attrs.is_resource_request:
            return any(rule_allows(rule, attrs) for rule in self._urls)
        entries = self._exact.get((attrs.api_group, attrs.combined_resource))
        if entries:
            verb, name = attrs.verb, attrs.name
            for verbs, names in entries:
                if (verbs is None or verb in verbs) and (names is None or name in names):
                    return True
        return any(rule_allows(rule, attrs) for rule in self._loose)
