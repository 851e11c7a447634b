"""Turn a request path + method into the attributes authorization and routing need.

Mirrors kube-apiserver's RequestInfoFactory: /api and /apis prefixes, namespaces/{ns}/... nesting,
the namespaces resource's own subresources (status, finalize), the legacy /watch/ prefix, and
verbs derived from the method and whether the path names an object or a collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

_VERB_BY_METHOD = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class RequestInfo:
    path: str
    verb: str
    is_resource: bool = False
    api_prefix: str = ""
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""
    parts: tuple[str, ...] = ()
    authz_name: str = ""

    @property
    def resource_label(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def parse(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    verb = _VERB_BY_METHOD.get(method.upper(), method.lower())
    segments = [unquote(s) for s in path.strip("/").split("/") if s != ""]
    if not segments or segments[0] not in ("api", "apis"):
        return RequestInfo(path=path, verb=method.lower())
    prefix = segments[0]
    rest = segments[1:]
    group = ""
    if prefix == "apis":
        if not rest:
            return RequestInfo(path=path, verb=method.lower(), api_prefix=prefix)
        group, rest = rest[0], rest[1:]
    if not rest:
        return RequestInfo(path=path, verb=method.lower(), api_prefix=prefix, group=group)
    version, rest = rest[0], rest[1:]
    if not rest:
        return RequestInfo(
            path=path, verb=method.lower(), api_prefix=prefix, group=group, version=version
        )
    watch_prefix = False
    if rest[0] == "watch":
        watch_prefix = True
        rest = rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in ("status", "finalize"):
                rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    extra = tuple(rest[3:])
    if watch_prefix:
        verb = "watch"
    elif verb == "get" and not name:
        verb = "list"
    elif verb == "delete" and not name:
        verb = "deletecollection"
    if verb == "list" and query.get("watch", "").lower() in ("true", "1"):
        verb = "watch"
    pinned = name
    if verb in ("list", "watch") and not name:
        # a list pinned to one name is authorized as that name (resourceNames rules)
        for part in query.get("fieldSelector", "").split(","):
            fld, sep, value = part.partition("=")
            if sep and fld.strip() == "metadata.name":
                pinned = value.lstrip("=").strip()
    return RequestInfo(
        path=path,
        verb=verb,
        is_resource=True,
        api_prefix=prefix,
        group=group,
        version=version,
        namespace=namespace,
        resource=resource,
        name=name,
        subresource=subresource,
        parts=extra,
        authz_name=pinned,
    )
