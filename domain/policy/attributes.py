"""HTTP request -> Kubernetes request attributes, the way kube-apiserver derives them.

`attributes_from_http` reproduces `RequestInfoFactory.NewRequestInfo` (k8s.io/apiserver
pkg/endpoints/request/requestinfo.go) with the API prefixes `api` (groupless) and `apis`:

- paths with fewer than three segments, or not under /api or /apis (or /apis/<group>/<version>
  without a resource), are non-resource requests whose verb is the lower-cased HTTP method;
- `/…/{watch|proxy}/…` sets the verb from the path (legacy forms); otherwise POST=create,
  GET/HEAD=get, PUT=update, PATCH=patch, DELETE=delete, anything else the empty verb;
- `namespaces/<ns>` sets the namespace; `namespaces/<ns>/{status|finalize}` are subresources of
  the namespace object; `namespaces/<ns>/<resource>/…` are namespaced resources;
- a get without a name is a list, or a watch when the first `watch` query value is anything but
  `false`/`0` (empty counts as true); a delete without a name is a deletecollection;
- a list or watch whose field selector requires `metadata.name=<x>` is named `<x>` (so
  `resourceNames` rules apply), unless the list options fail to decode (bad label or field
  selector, non-integer `limit`/`timeoutSeconds`) or `<x>` is not a valid path segment name.

Query strings are split the way Go's `net/url` does: `&` only; a pair containing `;` or a bad
percent escape is dropped; `+` is a space.

kubegate adds two rules on top:

1. Tunnel subresources are `create` whatever the method: `exec`, `attach`, `portforward` and
   `proxy` (pods/proxy, services/proxy, nodes/proxy, and the same names in any API group). The
   WebSocket upgrade for exec is a GET, and a GET through a proxy subresource reaches whatever
   the target serves, so none of them is read-only. kube-apiserver (1.35) checks `create` for
   exec/attach/portforward over WebSocket as well; for proxy it checks the method's verb, so a
   custom rule granting only `get` on pods/proxy is refused here although the cluster would
   accept it (edit and admin hold every verb on proxy, view holds none).
2. Paths with `.` or `..` segments are refused with `MalformedRequestError`: kube-apiserver's mux
   would redirect them to the cleaned path, but a prefix rule such as `/api/*` must never be
   matched by `/api/../metrics`. `path` is the *decoded* URL path (as `req.URL.Path` is in Go).
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import msgspec

from domain.policy import selectors
from domain.policy.errors import MalformedRequestError

API_PREFIXES = frozenset({"api", "apis"})
GROUPLESS_API_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
TUNNEL_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
"""Subresources that open a byte tunnel or reach a workload: always `create` in kubegate."""

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


class RequestAttributes(msgspec.Struct, frozen=True, kw_only=True):
    """What a request asks to do, in RBAC terms.

    `verb` is the Kubernetes verb for resource requests and the lower-cased HTTP method for
    non-resource requests. `namespace` is empty for cluster-scoped and all-namespace requests.
    `parts` are the path segments from the resource on (kube's `RequestInfo.Parts`).
    """

    verb: str
    path: str
    is_resource_request: bool = False
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()

    @property
    def combined_resource(self) -> str:
        """`resource/subresource`, or `resource` alone: the form RBAC rules name."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """One human phrase: `delete pods/web-1 in namespace shop`, `get /version`."""
        if not self.is_resource_request:
            return f"{self.verb or '(no verb)'} {self.path or '/'}"
        what = self.resource
        if self.api_group:
            what = f"{what}.{self.api_group}"
        if self.name:
            what = f"{what}/{self.name}"
        if self.subresource:
            what = f"{what}/{self.subresource}"
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb or '(no verb)'} {what}{where}"


def parse_query(query: str) -> dict[str, list[str]]:
    """Go's `url.ParseQuery`, keeping every value in order and dropping what Go drops."""
    values: dict[str, list[str]] = {}
    if query.startswith("?"):
        query = query[1:]
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        try:
            k = _query_unescape(key)
            v = _query_unescape(value)
        except ValueError:
            continue
        values.setdefault(k, []).append(v)
    return values


def _query_unescape(text: str) -> str:
    i = text.find("%")
    while i != -1:
        hexpart = text[i + 1 : i + 3]
        if len(hexpart) != 2 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
            raise ValueError(f"bad escape in {text!r}")
        i = text.find("%", i + 3)
    raw = unquote_to_bytes(text.replace("+", " "))
    return raw.decode("utf-8", "surrogateescape")


def _split_path(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


def _is_path_segment_name(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


def _go_bool(value: str) -> bool:
    return not (value == "0" or value.lower() == "false")


def _list_options_name(query: dict[str, list[str]]) -> tuple[bool, str]:
    """(watch, name-from-field-selector) as kube's list-options decoding yields them."""
    watch_values = query.get("watch")
    watch = bool(watch_values) and _go_bool(watch_values[0])
    try:
        for key in ("limit", "timeoutSeconds"):
            if key in query and not selectors.fits_int64(query[key][0]):
                raise selectors.SelectorSyntaxError(f"{key} is not an integer")
        if "labelSelector" in query:
            selectors.check_label_selector(query["labelSelector"][0])
        terms = selectors.parse_field_selector(query.get("fieldSelector", [""])[0])
    except selectors.SelectorSyntaxError:
        return watch, ""
    name = selectors.required_exact_match(terms, "metadata.name")
    if name is None or not _is_path_segment_name(name):
        return watch, ""
    return watch, name


def attributes_from_http(method: str, path: str, query: str = "") -> RequestAttributes:
    """Attributes of one HTTP request; `path` decoded, `query` raw (without `?`).

    Raises `MalformedRequestError` for `.`/`..` segments and for a legacy special-verb path with
    nothing after the verb (`/api/v1/watch`), which kube-apiserver also refuses.
    """
    parts = _split_path(path)
    if any(p in (".", "..") for p in parts):
        raise MalformedRequestError(path, "dot segments are not allowed")
    plain = RequestAttributes(verb=method.lower(), path=path)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return plain
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix not in GROUPLESS_API_PREFIXES:
        if len(rest) < 3:
            return plain
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]

    via_path = rest[0] in _SPECIAL_VERBS
    if via_path:
        if len(rest) < 2:
            raise MalformedRequestError(path, "unable to determine kind and namespace")
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]

    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = ""
    if len(rest) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = rest[2]

    if not name and verb == "get":
        watch, selected = _list_options_name(parse_query(query))
        verb = "watch" if watch else "list"
        name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    if subresource in TUNNEL_SUBRESOURCES:
        verb = "create"

    return RequestAttributes(
        verb=verb,
        path=path,
        is_resource_request=True,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(rest),
    )
