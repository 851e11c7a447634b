"""The HTTP front of the simulator: authentication, request attributes, RBAC, then routing to
discovery, OpenAPI, the registry, watches, reviews, TokenRequest and pod streams.

One place (`ApiHandler.__call__`) turns every refusal into the `Status` body kube-apiserver sends
and any unexpected failure into a 500 Status, so clients never see a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from ops.sim import (
    decoding,
    discovery,
    negotiation,
    openapi,
    registry,
    requestinfo,
    selectors,
    status,
    tables,
    watch,
)
from ops.sim.authn import UserInfo, with_authenticated
from ops.sim.errors import StatusError
from ops.sim.rbac import Attributes, forbidden_reason
from ops.sim.resources import ResourceType

if TYPE_CHECKING:
    from ops.sim.simulator import Simulator

log = logging.getLogger("kubegate.ops.sim.api")

Obj = dict[str, Any]
STREAM_SUBRESOURCES = ("log", "exec", "attach", "portforward")
JSON = "application/json"
BODY_TYPES = (JSON, "application/yaml", "*/*", "application/vnd.kubernetes.protobuf")


def _json(
    body: Any, code: int = 200, headers: dict[str, str] | None = None, yaml_out: bool = False
) -> web.Response:
    if yaml_out:
        return web.Response(
            body=yaml.safe_dump(body, sort_keys=False).encode(),
            status=code,
            content_type="application/yaml",
            headers=headers,
        )
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=code,
        content_type=JSON,
        headers=headers,
    )


def _flag(query: Any, name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


class ApiHandler:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.registry = sim.registry
        self.catalog = sim.catalog

    # -- entry ---------------------------------------------------------------------------------

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except StatusError as exc:
            headers = dict(exc.headers)
            retry = (exc.details or {}).get("retryAfterSeconds")
            if retry:
                headers["Retry-After"] = str(retry)
            body = exc.status()
            if getattr(exc, "list_continue", None):
                body["metadata"] = {"continue": exc.list_continue}
            return _json(body, exc.code, headers)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("simulator request failed", extra={"path": request.path})
            return _json(status.internal(f"{type(exc).__name__}: {exc}").status(), 500)

    def _authenticate(self, request: web.Request) -> UserInfo:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                user = self.sim.authenticator.from_token(token.strip())
                if user is not None:
                    return user
            raise status.unauthorized()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            from ops.sim.pki import identity_from_cert

            name, groups = identity_from_cert(der)
            if name:
                return UserInfo(name, "", with_authenticated(groups))
        raise status.unauthorized()

    def _impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        target = request.headers.get("Impersonate-User")
        groups = request.headers.getall("Impersonate-Group", [])
        if not target and not groups:
            return user
        if not target:
            raise status.StatusError(
                500,
                "InternalError",
                "Internal error occurred: requested [{Group  "
                + " ".join(groups)
                + "  }] without impersonating a user",
            )
        checks: list[Attributes] = []
        if target.startswith("system:serviceaccount:"):
            _, _, ns, name = target.split(":", 3)
            checks.append(
                Attributes(user, "impersonate", True, ns, "", "serviceaccounts", "", name)
            )
        else:
            checks.append(Attributes(user, "impersonate", True, "", "", "users", "", target))
        checks += [Attributes(user, "impersonate", True, "", "", "groups", "", g) for g in groups]
        for attrs in checks:
            if not self.sim.authorizer.authorize(attrs)[0]:
                raise status.forbidden(
                    attrs.resource,
                    attrs.name,
                    f'User "{user.username}" cannot impersonate resource "{attrs.resource}" in '
                    f'API group "" at the cluster scope',
                )
        if target.startswith("system:serviceaccount:"):
            ns = target.split(":")[2]
            groups = [*groups, "system:serviceaccounts", f"system:serviceaccounts:{ns}"]
        return UserInfo(target, "", with_authenticated(groups))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        user = self._impersonate(request, self._authenticate(request))
        query = request.query
        info = requestinfo.parse(request.method, request.path, dict(query))
        verb = info.verb
        if info.is_resource and info.subresource in ("exec", "attach", "portforward"):
            verb = "create"
        attrs = Attributes(
            user,
            verb,
            info.is_resource,
            info.namespace,
            info.group,
            info.resource,
            info.subresource,
            info.authz_name,
            request.path,
        )
        allowed, _ = self.sim.authorizer.authorize(attrs)
        if not allowed:
            reason = forbidden_reason(attrs)
            if info.is_resource:
                qualified = f"{info.resource}.{info.group}" if info.group else info.resource
                raise status.forbidden(qualified, info.name, reason)
            raise status.forbidden_path(reason)
        if not info.is_resource:
            return await self._non_resource(request, info)
        rt = self.catalog.by_plural(info.group, info.version, info.resource)
        if rt is None:
            raise status.no_such_resource()
        return await self._resource(request, info, rt, user)

    # -- non-resource ---------------------------------------------------------------------------

    async def _non_resource(
        self, request: web.Request, info: requestinfo.RequestInfo
    ) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method not in ("GET", "HEAD"):
            raise status.method_not_allowed()
        if path == "/version":
            return _json(self.sim.version_info())
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/openapi/v2":
            raise status.StatusError(
                404, "NotFound", "the server could not find the requested resource", {}
            )
        if path == "/openapi/v3":
            return _json(openapi.index(self.catalog, self.sim.git_version))
        if path.startswith("/openapi/v3/"):
            found = openapi.find(self.catalog, path[len("/openapi/v3/") :])
            if found is None:
                raise status.no_such_resource()
            body = openapi.document(found[0], found[1], self.sim.git_version)
            return web.Response(
                body=body,
                content_type=JSON,
                headers={
                    "Cache-Control": "public, immutable",
                    "Etag": openapi.doc_hash(found[0], found[1], self.sim.git_version),
                },
            )
        accept = request.headers.get("Accept", "")
        if path == "/api":
            wanted = discovery.wants_aggregated(accept)
            if wanted:
                return self._aggregated(discovery.aggregated(self.catalog, True, wanted), wanted)
            return _json(discovery.api_versions(f"{self.sim.host}:{self.sim.port}"))
        if path == "/apis":
            wanted = discovery.wants_aggregated(accept)
            if wanted:
                return self._aggregated(discovery.aggregated(self.catalog, False, wanted), wanted)
            return _json(discovery.api_group_list(self.catalog))
        if path == "/api/v1":
            return _json(discovery.resource_list(self.catalog, "", "v1"))
        if info.api_prefix == "apis" and info.group and not info.version:
            group = discovery.api_group(self.catalog, info.group)
            if group is None:
                raise status.no_such_resource()
            return _json(group)
        if (
            info.api_prefix == "apis"
            and info.version
            and self.catalog.has_group_version(info.group, info.version)
        ):
            return _json(discovery.resource_list(self.catalog, info.group, info.version))
        if path.startswith("/api"):
            raise status.no_such_resource()
        return web.Response(status=404, text="404 page not found\n", content_type="text/plain")

    def _aggregated(self, doc: Obj, version: str) -> web.Response:
        media = discovery.AGGREGATED_V2 if version == "v2" else discovery.AGGREGATED_V2BETA1
        resp = web.Response(body=json.dumps(doc, separators=(",", ":")).encode(), status=200)
        resp.headers["Content-Type"] = media
        resp.headers["Vary"] = "Accept"
        return resp

    # -- resources -----------------------------------------------------------------------------

    def _context(self, request: web.Request, user: UserInfo) -> registry.WriteContext:
        query = request.query
        dry = query.getall("dryRun", [])
        for value in dry:
            if value != "All":
                raise status.bad_request(f'Invalid value: "{value}": supported values: "All"')
        manager = query.get("fieldManager")
        if manager is None:
            agent = request.headers.get("User-Agent", "")
            manager = agent.split("/", 1)[0][:128] if agent else "unknown"
        validation = query.get("fieldValidation", "Warn") or "Warn"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise status.bad_request(
                f"fieldValidation parameter unsupported: {validation}; supported: Ignore, Warn, "
                f"Strict"
            )
        return registry.WriteContext(user, manager, bool(dry), validation)

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > decoding.MAX_BODY:
            raise status.too_large(decoding.MAX_BODY)
        chunks = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > decoding.MAX_BODY:
                raise status.too_large(decoding.MAX_BODY)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _body(
        self, request: web.Request, allowed: tuple[str, ...] = BODY_TYPES
    ) -> tuple[Any, str]:
        media = negotiation.check_body_type(request.headers.get("Content-Type", ""), allowed)
        raw = await self._read_body(request)
        if not raw.strip():
            raise status.bad_request("Object 'Kind' is missing in ''")
        return decoding.parse(raw, media), media

    def _respond(
        self,
        request: web.Request,
        rt: ResourceType,
        obj: Obj,
        ctx: registry.WriteContext | None = None,
        code: int = 200,
    ) -> web.Response:
        accept = negotiation.parse_accept(request.headers.get("Accept", ""))
        headers = {}
        if ctx is not None and ctx.warnings:
            headers["Warning"] = ", ".join(
                '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in ctx.warnings
            )
        if (
            accept.table
            and obj.get("kind") not in ("Status", "Scale", "TokenRequest")
            and "metadata" in obj
        ):
            include = request.query.get("includeObject", "PartialObjectMetadata")
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            body = tables.table(rt.key, [obj], meta, include, rt.group_version, rt.kind)
            return _json(body, code, headers)
        if accept.yaml:
            return _json(obj, code, headers, yaml_out=True)
        return _json(obj, code, headers)

    async def _resource(
        self, request: web.Request, info: requestinfo.RequestInfo, rt: ResourceType, user: UserInfo
    ) -> web.StreamResponse:
        verb = info.verb
        ns = info.namespace
        if rt.key == registry.NAMESPACES:
            ns = ""
        if info.parts or (info.subresource and rt.subresource(info.subresource) is None):
            raise status.no_such_resource()
        if rt.namespaced and not ns and verb not in ("list", "watch"):
            raise status.no_such_resource()
        if not rt.namespaced and info.namespace and rt.key != registry.NAMESPACES:
            raise status.no_such_resource()
        if verb not in rt.verbs and not info.subresource and verb not in ("list", "watch", "get"):
            raise status.method_not_allowed()
        if "list" not in rt.verbs:
            return await self._review(request, rt, info, user)
        if info.subresource in STREAM_SUBRESOURCES:
            return await self._stream(request, rt, info, ns)
        if verb == "get":
            obj = self.registry.get(rt, ns, info.name)
            if info.subresource == "scale":
                return _json(self.registry.scale_of(rt, obj))
            return self._respond(request, rt, obj)
        if verb in ("list", "watch"):
            return await self._list_or_watch(request, rt, ns or None, verb)
        if verb == "create":
            if info.subresource == "token":
                return await self._token_request(request, rt, ns, info.name, user)
            if info.name or info.subresource:
                raise status.method_not_allowed()
            ctx = self._context(request, user)
            body, _ = await self._body(request)
            obj = self.registry.decode(rt, body, ctx)
            created = self.registry.create(rt, ns, obj, ctx)
            return self._respond(request, rt, created, ctx, 201)
        if verb == "update":
            ctx = self._context(request, user)
            body, _ = await self._body(request)
            if info.subresource == "scale":
                return _json(self.registry.update_scale(rt, ns, info.name, body, ctx))
            obj = self.registry.decode(rt, body, ctx)
            if info.subresource == "finalize":
                return self._respond(
                    request, rt, self.sim.finalize_namespace(info.name, obj, ctx), ctx
                )
            updated = self.registry.update(rt, ns, info.name, obj, ctx, info.subresource)
            return self._respond(request, rt, updated, ctx)
        if verb == "patch":
            ctx = self._context(request, user)
            media = negotiation.check_body_type(
                request.headers.get("Content-Type", ""), registry.PATCH_TYPES
            )
            raw = await self._read_body(request)
            if not raw.strip():
                raise status.bad_request("the body of the request was empty")
            if media == registry.PATCH_APPLY:
                body = decoding.parse(raw, "application/yaml")
            else:
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise status.bad_request(f"error decoding patch: {exc}") from exc
            force = _flag(request.query, "force")
            if force and media != registry.PATCH_APPLY:
                raise status.bad_request("force flag is only allowed for apply patches")
            if media == registry.PATCH_APPLY and "fieldManager" not in request.query:
                raise status.bad_request(
                    "PATCH, application/apply-patch+yaml requests must have a fieldManager"
                )
            result = self.registry.patch(
                rt, ns, info.name, media, body, ctx, info.subresource, force
            )
            if info.subresource == "scale":
                return _json(result)
            return self._respond(request, rt, result, ctx)
        if verb == "delete":
            opts = await self._delete_options(request)
            result = self.registry.delete(rt, ns, info.name, opts)
            if result.get("kind") == "Status":
                return _json(result)
            code = (
                202
                if result["metadata"].get("deletionTimestamp") and rt.key != "/pods" and False
                else 200
            )
            return self._respond(request, rt, result, code=code)
        if verb == "deletecollection":
            opts = await self._delete_options(request)
            listing = self.registry.list(rt, ns or None, self._list_options(request, rt))
            deleted = []
            for item in listing["items"]:
                try:
                    result = self.registry.delete(
                        rt, item["metadata"].get("namespace", ""), item["metadata"]["name"], opts
                    )
                except StatusError as exc:
                    if exc.code == 404:
                        continue
                    raise
                if result.get("kind") != "Status":
                    deleted.append(registry._strip_type(result))
                else:
                    deleted.append(registry._strip_type(item))
            listing["items"] = deleted
            listing["metadata"] = {"resourceVersion": str(self.sim.store.rv)}
            return _json(listing)
        raise status.method_not_allowed()

    def _list_options(self, request: web.Request, rt: ResourceType) -> registry.ListOptions:
        q = request.query
        labels = selectors.parse_label_selector(q.get("labelSelector"))
        fields = selectors.parse_field_selector(q.get("fieldSelector"), rt.key)
        limit = 0
        if q.get("limit"):
            try:
                limit = max(0, int(q["limit"]))
            except ValueError as exc:
                raise status.bad_request(f'invalid limit "{q["limit"]}"') from exc
        match = q.get("resourceVersionMatch", "")
        if match and match not in ("Exact", "NotOlderThan"):
            raise status.bad_request(f'resourceVersionMatch: Unsupported value: "{match}"')
        if match and not q.get("resourceVersion"):
            raise status.StatusError(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
                "resourceVersion is provided",
            )
        if q.get("continue") and q.get("resourceVersion") not in (None, "", "0"):
            raise status.bad_request(
                "specifying resource version is not allowed when using continue"
            )
        return registry.ListOptions(
            labels, fields, limit, q.get("continue", ""), q.get("resourceVersion", ""), match
        )

    async def _list_or_watch(
        self, request: web.Request, rt: ResourceType, ns: str | None, verb: str
    ) -> web.StreamResponse:
        accept = negotiation.parse_accept(request.headers.get("Accept", ""))
        opts = self._list_options(request, rt)
        include = request.query.get("includeObject", "PartialObjectMetadata")
        if verb == "watch":
            match = selectors.matcher(opts.labels, opts.fields)
            timeout = None
            if request.query.get("timeoutSeconds"):
                try:
                    timeout = float(request.query["timeoutSeconds"])
                except ValueError as exc:
                    raise status.bad_request("invalid timeoutSeconds") from exc

            def transform(obj: Obj, first: bool) -> Obj:
                if accept.table:
                    meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                    return tables.table(
                        rt.key, [obj], meta, include, rt.group_version, rt.kind, headers=first
                    )
                return obj

            wopts = watch.WatchOptions(
                request.query.get("resourceVersion", ""),
                timeout,
                _flag(request.query, "allowWatchBookmarks"),
                _flag(request.query, "sendInitialEvents"),
                match,
                self.sim.bookmark_interval,
            )
            content_type = "application/json;stream=watch"
            return await watch.serve(
                request, self.sim.store, rt, ns, wopts, transform, content_type, self.sim.stopping
            )
        listing = self.registry.list(rt, ns, opts)
        if accept.table:
            objs = [
                {"apiVersion": rt.group_version, "kind": rt.kind, **o} for o in listing["items"]
            ]
            return _json(
                tables.table(rt.key, objs, listing["metadata"], include, rt.group_version, rt.kind)
            )
        return _json(listing, yaml_out=accept.yaml)

    async def _delete_options(self, request: web.Request) -> registry.DeleteOptions:
        q = request.query
        opts = registry.DeleteOptions()
        raw = await self._read_body(request) if request.can_read_body else b""
        if raw.strip():
            body = decoding.parse(raw, request.headers.get("Content-Type", JSON))
            if not isinstance(body, dict):
                raise status.bad_request("DeleteOptions must be an object")
            opts.propagation = body.get("propagationPolicy") or ""
            opts.grace_seconds = body.get("gracePeriodSeconds")
            pre = body.get("preconditions") or {}
            opts.precondition_uid = pre.get("uid")
            opts.precondition_rv = pre.get("resourceVersion")
            opts.dry_run = bool(body.get("dryRun"))
            if body.get("orphanDependents") is True and not opts.propagation:
                opts.propagation = "Orphan"
        if q.get("propagationPolicy"):
            opts.propagation = q["propagationPolicy"]
        if q.get("gracePeriodSeconds"):
            try:
                opts.grace_seconds = int(q["gracePeriodSeconds"])
            except ValueError as exc:
                raise status.bad_request("invalid gracePeriodSeconds") from exc
        if q.getall("dryRun", []):
            opts.dry_run = True
        if opts.propagation not in ("", "Orphan", "Background", "Foreground"):
            raise status.bad_request(f'propagationPolicy: Unsupported value: "{opts.propagation}"')
        return opts

    # -- special endpoints --------------------------------------------------------------------

    async def _stream(
        self, request: web.Request, rt: ResourceType, info: requestinfo.RequestInfo, ns: str
    ) -> web.StreamResponse:
        if rt.key != "/pods":
            raise status.no_such_resource()
        pod = self.registry.get(rt, ns, info.name)
        handle = self.sim.stream_handler()
        if handle is None or self.sim.runtime is None:
            raise status.StatusError(
                501,
                "NotImplemented",
                f"pods/{info.subresource} is not available in this simulator build",
            )
        return await handle(request, info.subresource, pod, self.sim.runtime)

    async def _token_request(
        self, request: web.Request, rt: ResourceType, ns: str, name: str, user: UserInfo
    ) -> web.StreamResponse:
        ctx = self._context(request, user)
        body, _ = await self._body(request)
        req = self.registry.decode(
            rt,
            body,
            ctx,
            "io.k8s.api.authentication.v1.TokenRequest",
            "TokenRequest",
            "authentication.k8s.io/v1",
        )
        account = self.registry.get(rt, ns, name)
        spec = req.get("spec") or {}
        seconds = spec.get("expirationSeconds", 3600)
        causes = []
        if seconds is not None and seconds < 600:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.expirationSeconds",
                    "message": f"Invalid value: {seconds}: may not specify a duration less than "
                    "10 minutes",
                }
            )
        if seconds is not None and seconds > 2**32:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.expirationSeconds",
                    "message": f"Invalid value: {seconds}: may not specify a duration larger "
                    "than 2^32 seconds",
                }
            )
        if causes:
            raise status.invalid("TokenRequest", "authentication.k8s.io", name, causes)
        audiences = spec.get("audiences") or []
        token, exp = self.sim.issuer.issue(
            ns,
            name,
            account["metadata"]["uid"],
            seconds,
            audiences or None,
            spec.get("boundObjectRef"),
        )
        import datetime as dt

        from ops.sim import naming

        expires = naming.timestamp(dt.datetime.fromtimestamp(exp, dt.UTC))
        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": naming.timestamp()},
            "spec": {
                "audiences": audiences or [self.sim.audience],
                "expirationSeconds": seconds,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": expires},
        }
        return _json(out, 201)

    async def _review(
        self, request: web.Request, rt: ResourceType, info: requestinfo.RequestInfo, user: UserInfo
    ) -> web.StreamResponse:
        if info.verb != "create" or info.name:
            raise status.method_not_allowed()
        ctx = self._context(request, user)
        body, _ = await self._body(request)
        review = self.registry.decode(rt, body, ctx)
        spec = review.get("spec") or {}
        from ops.sim import naming

        review["metadata"] = {"creationTimestamp": None}
        if rt.kind == "SelfSubjectReview":
            review["status"] = {"userInfo": user.as_dict()}
            return _json(review, 201)
        if rt.kind == "TokenReview":
            token = spec.get("token", "")
            subject = self.sim.authenticator.from_token(token)
            review["status"] = (
                {
                    "authenticated": True,
                    "user": subject.as_dict(),
                    "audiences": spec.get("audiences") or [self.sim.audience],
                }
                if subject
                else {"user": {}, "error": "invalid bearer token"}
            )
            return _json(review, 201)
        if rt.kind == "SelfSubjectRulesReview":
            namespace = spec.get("namespace", "")
            res, nonres = self.sim.authorizer.rules_for(user, namespace)
            review["status"] = {
                "resourceRules": res,
                "nonResourceRules": nonres,
                "incomplete": False,
            }
            return _json(review, 201)
        if rt.kind == "SelfSubjectAccessReview":
            subject = user
        else:
            if not spec.get("user") and not spec.get("groups"):
                raise status.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.user",
                            "message": 'Invalid value: "": at least one of user or group '
                            "must be specified",
                        }
                    ],
                )
            subject = UserInfo(
                spec.get("user", ""),
                spec.get("uid", ""),
                tuple(spec.get("groups") or ()),
                spec.get("extra") or {},
            )
        res = spec.get("resourceAttributes")
        nonres = spec.get("nonResourceAttributes")
        if rt.kind == "LocalSubjectAccessReview":
            if not res or res.get("namespace", info.namespace) != info.namespace:
                raise status.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.resourceAttributes.namespace",
                            "message": "Invalid value: must match metadata.namespace",
                        }
                    ],
                )
        if res:
            attrs = Attributes(
                subject,
                res.get("verb", ""),
                True,
                res.get("namespace", ""),
                res.get("group", ""),
                res.get("resource", ""),
                res.get("subresource", ""),
                res.get("name", ""),
            )
        elif nonres:
            attrs = Attributes(subject, nonres.get("verb", ""), False, path=nonres.get("path", ""))
        else:
            raise status.invalid(
                rt.kind,
                rt.group,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "spec.resourceAttributes",
                        "message": "Required value: exactly one of nonResourceAttributes or "
                        "resourceAttributes must be specified",
                    }
                ],
            )
        allowed, reason = self.sim.authorizer.authorize(attrs)
        review["status"] = {"allowed": allowed}
        if reason:
            review["status"]["reason"] = reason
        del naming
        return _json(review, 201)


def make_app(handler: Callable[[web.Request], Any]) -> web.Application:
    app = web.Application(client_max_size=decoding.MAX_BODY + 1024 * 1024)

    async def serve(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app.router.add_route("*", "/{tail:.*}", serve)
    return app
