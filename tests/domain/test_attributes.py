"""Request attributes: kube-apiserver's own RequestInfo test tables, then kubegate's rules."""

# ruff: noqa: E501  (the tables keep one kube test case per line, as upstream writes them)

from __future__ import annotations

import pytest

from domain.policy.attributes import RequestAttributes, attributes_from_http, parse_query
from domain.policy.errors import MalformedRequestError

# (method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts)
# From k8s.io/apiserver pkg/endpoints/request/requestinfo_test.go, TestGetAPIRequestInfo.
KUBE_SUCCESS_CASES = [
    ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other", ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo", "subpath", "not", "a", "subresource"]),
    ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo", ["pods", "foo", "status"]),
    # kube: verb "get"; kubegate: proxy is a tunnel subresource, so "create" (see below)
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "create", "api", "", "v1", "other", "pods", "proxy", "foo", ["pods", "foo", "proxy", "subpath"]),
    ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other", ["namespaces", "other", "finalize"]),
    ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other", ["namespaces", "other", "status"]),
    ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", ["nodes"]),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", "", ["pods"]),
]  # fmt: skip


def _split(url: str) -> tuple[str, str]:
    path, _, query = url.partition("?")
    return path, query


@pytest.mark.parametrize("case", KUBE_SUCCESS_CASES, ids=lambda c: f"{c[0]} {c[1]}")
def test_kube_success_cases(case: tuple) -> None:
    method, url, verb, prefix, group, version, ns, resource, sub, name, parts = case
    attrs = attributes_from_http(method, *_split(url))
    assert attrs == RequestAttributes(
        verb=verb,
        path=_split(url)[0],
        is_resource_request=True,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=ns,
        resource=resource,
        subresource=sub,
        name=name,
        parts=tuple(parts),
    )


# TestGetAPIRequestInfo error cases and TestGetNonAPIRequestInfo.
@pytest.mark.parametrize(
    ("url", "is_resource"),
    [
        ("/", False),
        ("/api/version/", False),
        ("/apis/group/version/", False),
        ("/badprefix/version/resource", False),
        ("/apis/version/resource", False),
        ("/api/version/resource", True),
        ("/apis/group/version/resource/name/subresource", True),
        ("/api/version/resource/name/subresource", True),
        ("/apis/batch/v1/job", True),
        ("/apis/batch/v1/job/foo", True),
        ("/apis/batch/v1/job/foo/scale", True),
        ("/not-api/version/resource", False),
        ("/apis/extensions/v1beta1", False),
        ("/apis/extensions/v1beta1/", False),
        ("/api/version", False),
        ("/api", False),
        ("", False),
    ],
)
def test_kube_resource_or_not(url: str, is_resource: bool) -> None:
    assert attributes_from_http("GET", url).is_resource_request is is_resource


# TestSelectorParsing: (method, url, name, verb)
KUBE_SELECTOR_CASES = [
    ("GET", "/apis/group/version/resource", "", "list"),
    ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list"),
    ("GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch"),
    ("GET", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "list"),
    ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list"),
    ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch"),
    ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list"),
    ("DELETE", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "deletecollection"),
    ("GET", "/apis/group/version/resource?fieldSelector=metadata.name=foo&fieldSelector=metadata.name=bar&labelSelector=foo=bar&labelSelector=foo=baz", "foo", "list"),
    ("GET", "/apis/group/version/resource/name?fieldSelector=foo=bar&labelSelector=foo=bar", "name", "get"),
    ("GET", "/apis/group/version/watch/resource?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "", "watch"),
    ("GET", "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "name", "watch"),
]  # fmt: skip


@pytest.mark.parametrize("case", KUBE_SELECTOR_CASES, ids=lambda c: f"{c[0]} {c[1]}")
def test_kube_selector_cases(case: tuple) -> None:
    method, url, name, verb = case
    attrs = attributes_from_http(method, *_split(url))
    assert (attrs.name, attrs.verb) == (name, verb)


@pytest.mark.parametrize(
    ("query", "verb", "name"),
    [
        ("watch=", "watch", ""),  # present and empty is true (Convert_Slice_string_To_bool)
        ("watch=FALSE", "list", ""),
        ("watch=yes", "watch", ""),
        ("watch=0&watch=1", "list", ""),  # first value wins
        ("watch=true;x=1", "list", ""),  # a pair with ';' is dropped, as Go drops it
        ("watch=%zz", "list", ""),  # bad escape: pair dropped
        ("watch=tru%65", "watch", ""),
        ("fieldSelector=metadata.name%3Dweb", "list", "web"),
        ("fieldSelector=metadata.name==web", "list", "web"),
        ("fieldSelector=metadata.name!=web", "list", ""),
        ("fieldSelector=metadata.namespace=x,metadata.name=web", "list", "web"),
        ("fieldSelector=metadata.name=a%5C,b", "list", "a,b"),  # escaped comma
        ("fieldSelector=metadata.name=a=b", "list", ""),  # unescaped '=' in a value
        ("fieldSelector=metadata.name=..", "list", ""),  # not a path segment name
        ("fieldSelector=metadata.name=a%2Fb", "list", ""),
        ("fieldSelector=metadata.name=web&limit=10", "list", "web"),
        ("fieldSelector=metadata.name=web&limit=ten", "list", ""),  # list options fail
        ("fieldSelector=metadata.name=web&limit=", "list", ""),
        ("fieldSelector=metadata.name=web&timeoutSeconds=-5", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=app+in+(a,b),!tier", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=app%3D%3Dx,env!%3Dy", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=a+b", "list", ""),
        ("fieldSelector=metadata.name=web&labelSelector=-bad", "list", ""),
        ("fieldSelector=metadata.name=web&labelSelector=x>1", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=x>one", "list", ""),
        ("fieldSelector=metadata.name=web&labelSelector=!x=1", "list", ""),
        ("fieldSelector=metadata.name=web&labelSelector=x+in+()", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=x+in+(", "list", ""),
        ("fieldSelector=metadata.name=web&labelSelector=example.com/app=v", "list", "web"),
        ("fieldSelector=metadata.name=web&labelSelector=Example.com/app=v", "list", ""),
        ("fieldSelector=metadata.name=web&watch=1", "watch", "web"),
    ],
)
def test_list_options(query: str, verb: str, name: str) -> None:
    attrs = attributes_from_http("GET", "/api/v1/namespaces/shop/pods", query)
    assert (attrs.verb, attrs.name) == (verb, name)


def test_named_list_does_not_become_a_get_or_deletecollection() -> None:
    # only get-without-name is renamed; a DELETE with a selector stays a deletecollection
    attrs = attributes_from_http("DELETE", "/api/v1/pods", "fieldSelector=metadata.name=x")
    assert (attrs.verb, attrs.name) == ("deletecollection", "")


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "PUT"])
@pytest.mark.parametrize("sub", ["exec", "attach", "portforward"])
def test_tunnel_subresources_are_create_whatever_the_method(method: str, sub: str) -> None:
    attrs = attributes_from_http(
        method, f"/api/v1/namespaces/shop/pods/web-1/{sub}", "command=sh&stdin=true"
    )
    assert (attrs.verb, attrs.resource, attrs.subresource, attrs.name) == (
        "create",
        "pods",
        sub,
        "web-1",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/shop/services/web:80/proxy/metrics",
        "/api/v1/nodes/node-1/proxy/configz",
        "/api/v1/namespaces/shop/pods/web-1/proxy",
    ],
)
def test_proxy_subresources_are_create(path: str) -> None:
    attrs = attributes_from_http("GET", path)
    assert (attrs.verb, attrs.subresource) == ("create", "proxy")


def test_log_stays_read_only() -> None:
    attrs = attributes_from_http("GET", "/api/v1/namespaces/shop/pods/web-1/log", "follow=true")
    assert (attrs.verb, attrs.combined_resource) == ("get", "pods/log")


@pytest.mark.parametrize(
    ("method", "verb"),
    [("POST", "create"), ("PUT", "update"), ("PATCH", "patch"), ("OPTIONS", ""), ("get", "")],
)
def test_method_to_verb(method: str, verb: str) -> None:
    # Go matches methods case-sensitively: a lower-case "get" is no known method
    assert attributes_from_http(method, "/api/v1/namespaces/a/pods/p").verb == verb


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/version", "get"),
        ("HEAD", "/healthz", "head"),
        ("GET", "/api", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("POST", "/logs", "post"),
    ],
)
def test_non_resource_requests(method: str, path: str, verb: str) -> None:
    attrs = attributes_from_http(method, path, "timeout=32s")
    assert attrs == RequestAttributes(verb=verb, path=path)


def test_openapi_is_non_resource() -> None:
    assert not attributes_from_http("GET", "/openapi/v2").is_resource_request


def test_extra_slashes_are_trimmed_like_kube() -> None:
    attrs = attributes_from_http("GET", "///api/v1/namespaces/a/pods/p///")
    assert (attrs.namespace, attrs.resource, attrs.name) == ("a", "pods", "p")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/a/pods/../secrets",
        "/api/../metrics",
        "/apis/./apps/v1/deployments",
        "/api/v1/namespaces/a/pods/.",
    ],
)
def test_dot_segments_are_refused(path: str) -> None:
    with pytest.raises(MalformedRequestError) as err:
        attributes_from_http("GET", path)
    assert err.value.path == path


@pytest.mark.parametrize("path", ["/api/v1/watch", "/apis/apps/v1/proxy/"])
def test_special_verb_without_anything_after_it_is_refused(path: str) -> None:
    with pytest.raises(MalformedRequestError):
        attributes_from_http("GET", path)


def test_describe() -> None:
    assert (
        attributes_from_http("DELETE", "/apis/apps/v1/namespaces/shop/deployments/web").describe()
        == "delete deployments.apps/web in namespace shop"
    )
    assert attributes_from_http("GET", "/api/v1/nodes").describe() == "list nodes"
    assert (
        attributes_from_http("GET", "/api/v1/namespaces/a/pods/p/exec").describe()
        == "create pods/p/exec in namespace a"
    )
    assert attributes_from_http("GET", "/version").describe() == "get /version"


def test_parse_query_like_go() -> None:
    assert parse_query("a=1&a=2&b&c=x+y&d=%41&&e=1;2&f=%") == {
        "a": ["1", "2"],
        "b": [""],
        "c": ["x y"],
        "d": ["A"],
    }
    assert parse_query("?k=v") == {"k": ["v"]}
