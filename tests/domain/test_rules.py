"""RBAC rule matching (Kubernetes semantics) and the compiled RuleSet."""

# ruff: noqa: E501  (one rule case per line)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Rule
from domain.policy.attributes import RequestAttributes, attributes_from_http
from domain.policy.errors import InvalidRuleError
from domain.policy.rules import RuleSet, check_rule, read_only, rule_allows


def res(
    verb: str, resource: str, sub: str = "", name: str = "", group: str = "", ns: str = "a"
) -> RequestAttributes:
    return RequestAttributes(
        verb=verb,
        path="/x",
        is_resource_request=True,
        api_group=group,
        namespace=ns,
        resource=resource,
        subresource=sub,
        name=name,
    )


def url(verb: str, path: str) -> RequestAttributes:
    return RequestAttributes(verb=verb, path=path)


R = Rule
CASES = [
    # verbs
    (R(verbs=("get",), resources=("pods",)), res("get", "pods", name="p"), True),
    (R(verbs=("get",), resources=("pods",)), res("list", "pods"), False),
    (R(verbs=("*",), resources=("pods",)), res("deletecollection", "pods"), True),
    (R(verbs=("*",), resources=("pods",)), res("", "pods"), True),  # unknown method
    (R(verbs=("get",), resources=("pods",)), res("", "pods"), False),
    # groups
    (R(verbs=("get",), api_groups=("apps",), resources=("deployments",)), res("get", "deployments", group="apps"), True),
    (R(verbs=("get",), api_groups=("",), resources=("deployments",)), res("get", "deployments", group="apps"), False),
    (R(verbs=("get",), api_groups=("*",), resources=("deployments",)), res("get", "deployments", group="x.io"), True),
    (R(verbs=("get",), api_groups=(), resources=("pods",)), res("get", "pods"), False),
    # resources and subresources
    (R(verbs=("get",), resources=("pods",)), res("get", "pods", "log", "p"), False),
    (R(verbs=("get",), resources=("pods/log",)), res("get", "pods", "log", "p"), True),
    (R(verbs=("get",), resources=("pods/log",)), res("get", "pods", name="p"), False),
    (R(verbs=("get",), resources=("*/log",)), res("get", "pods", "log", "p"), True),
    (R(verbs=("get",), resources=("*/log",)), res("get", "log", name="p"), False),
    (R(verbs=("get",), resources=("*/status",)), res("get", "pods", "log", "p"), False),
    (R(verbs=("get",), resources=("pods/*",)), res("get", "pods", "log", "p"), False),
    (R(verbs=("get",), resources=("*",)), res("get", "pods", "log", "p"), True),
    (R(verbs=("get",), resources=("*",)), res("get", "nodes", ns=""), True),
    # resource names
    (R(verbs=("get",), resources=("pods",), resource_names=("p",)), res("get", "pods", name="p"), True),
    (R(verbs=("get",), resources=("pods",), resource_names=("p",)), res("get", "pods", name="q"), False),
    (R(verbs=("list",), resources=("pods",), resource_names=("p",)), res("list", "pods"), False),
    (R(verbs=("list",), resources=("pods",), resource_names=("p",)), res("list", "pods", name="p"), True),
    (R(verbs=("create",), resources=("pods",), resource_names=("p",)), res("create", "pods"), False),
    (R(verbs=("create",), resources=("pods/exec",), resource_names=("p",)), res("create", "pods", "exec", "p"), True),
    # non-resource URLs
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/version",)), url("get", "/version"), True),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/version",)), url("get", "/version/"), False),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/apis/*",)), url("get", "/apis/apps/v1"), True),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/apis/*",)), url("get", "/apis"), False),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/apis*",)), url("get", "/apis"), True),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/apis*",)), url("get", "/apiserver"), True),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("*",)), url("get", "/metrics"), True),
    (R(verbs=("get",), api_groups=(), non_resource_urls=("/metrics",)), url("post", "/metrics"), False),
    (R(verbs=("*",), api_groups=(), non_resource_urls=("/logs/**",)), url("get", "/logs/x"), True),
    # a resource rule never matches a URL and vice versa
    (R(verbs=("*",), api_groups=("*",), resources=("*",)), url("get", "/version"), False),
    (R(verbs=("*",), api_groups=(), non_resource_urls=("*",)), res("get", "pods"), False),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "attrs", "allowed"), CASES)
def test_rule_allows(rule: Rule, attrs: RequestAttributes, allowed: bool) -> None:
    assert rule_allows(rule, attrs) is allowed
    assert RuleSet([rule]).allows(attrs) is allowed


def test_ruleset_is_any_of_its_rules() -> None:
    rules = [
        R(verbs=("get",), resources=("pods",), resource_names=("p",)),
        R(verbs=("list",), resources=("pods",)),
    ]
    rs = RuleSet(rules)
    assert rs.allows(res("get", "pods", name="p"))
    assert rs.allows(res("list", "pods"))
    assert not rs.allows(res("get", "pods", name="q"))
    assert not RuleSet([])
    assert not RuleSet([]).allows(res("get", "pods"))


def test_tunnel_requests_through_rules() -> None:
    # the WebSocket exec upgrade is a GET but must need `create` on pods/exec
    exec_ = attributes_from_http("GET", "/api/v1/namespaces/a/pods/p/exec", "command=sh")
    assert not rule_allows(R(verbs=("get",), resources=("pods/exec",)), exec_)
    assert rule_allows(R(verbs=("create",), resources=("pods/exec",)), exec_)


@pytest.mark.parametrize(
    ("rule", "namespaced"),
    [
        (R(verbs=(), resources=("pods",)), False),
        (R(verbs=("",), resources=("pods",)), False),
        (R(verbs=("get",), resources=()), False),
        (R(verbs=("get",), api_groups=(), resources=("pods",)), False),
        (R(verbs=("get",), resources=("pods",), non_resource_urls=("/x",)), False),
        (R(verbs=("get",), api_groups=(), non_resource_urls=("/x",)), True),
        (R(verbs=("get",), api_groups=(), non_resource_urls=("x",)), False),
        (R(verbs=("get",), api_groups=(), non_resource_urls=("/a*b",)), False),
    ],
)
def test_check_rule_rejects(rule: Rule, namespaced: bool) -> None:
    with pytest.raises(InvalidRuleError):
        check_rule(rule, namespaced=namespaced)


def test_check_rule_accepts() -> None:
    check_rule(R(verbs=("get",), resources=("pods",)), namespaced=True)
    check_rule(R(verbs=("get",), api_groups=(), non_resource_urls=("/healthz", "/logs/*", "*")))


def test_read_only_cuts_verbs() -> None:
    rules = (
        R(verbs=("*",), api_groups=("*",), resources=("*",)),
        R(verbs=("create", "delete"), resources=("pods",)),
        R(verbs=("get", "update"), resources=("configmaps",), resource_names=("c",)),
    )
    assert read_only(rules) == (
        R(verbs=("get", "list", "watch"), api_groups=("*",), resources=("*",)),
        R(verbs=("get",), resources=("configmaps",), resource_names=("c",)),
    )


# --- compiled RuleSet == naive matching, for any rules and requests ---------------------------

_words = st.sampled_from(["pods", "nodes", "secrets", "deployments", "*"])
_subs = st.sampled_from(["", "log", "exec", "status"])
_groups = st.sampled_from(["", "apps", "x.io", "*"])
_verbs = st.sampled_from(["get", "list", "create", "delete", "", "*"])
_names = st.sampled_from(["", "p", "q"])


@st.composite
def rules_(draw: st.DrawFn) -> Rule:
    resources = draw(
        st.lists(
            st.one_of(
                _words,
                st.builds(lambda r, s: f"{r}/{s}", _words, _subs.filter(bool)),
            ),
            max_size=3,
        )
    )
    urls = draw(st.lists(st.sampled_from(["/version", "/apis/*", "*", "/api*", "/x"]), max_size=2))
    return Rule(
        verbs=tuple(draw(st.lists(_verbs, min_size=1, max_size=3))),
        api_groups=tuple(draw(st.lists(_groups, max_size=2))),
        resources=tuple(resources),
        resource_names=tuple(draw(st.lists(_names, max_size=2))),
        non_resource_urls=tuple(urls),
    )


@st.composite
def requests_(draw: st.DrawFn) -> RequestAttributes:
    if draw(st.booleans()):
        return url(
            draw(_verbs.filter(lambda v: v != "*")),
            draw(st.sampled_from(["/version", "/apis", "/apis/apps", "/api", "/x", "/metrics"])),
        )
    return res(
        draw(_verbs.filter(lambda v: v != "*")),
        draw(_words.filter(lambda w: w != "*")),
        draw(_subs),
        draw(_names),
        draw(_groups.filter(lambda g: g != "*")),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(rules_(), max_size=5), requests_())
def test_ruleset_equals_naive_matching(rules: list[Rule], attrs: RequestAttributes) -> None:
    assert RuleSet(rules).allows(attrs) == any(rule_allows(r, attrs) for r in rules)
