"""HTTP to the OpenID provider: discovery, signing keys (JWKS) and the code exchange.

Discovery (`<issuer>/.well-known/openid-configuration`) is cached for `metadata_ttl` and must
name exactly the configured issuer (OpenID Connect Discovery 1.0, 4.3). The key set is cached
too and fetched again when a token names a key we do not know (the provider rotated its keys),
at most once per `keys_min_refresh`, so forged `kid`s cannot make us hammer the provider.
The code exchange (RFC 6749 4.1.3 with the PKCE verifier, RFC 7636) authenticates the client
with HTTP Basic when it has a secret (`client_secret_basic`, the default method), else sends
only its id (a public client).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from edge.errors import OidcError, OidcProviderError
from edge.identity_settings import OidcSettings

log = logging.getLogger("kubegate.edge.oidc_client")

DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    code_challenge_methods: tuple[str, ...] = ()


class ProviderClient:
    def __init__(
        self,
        settings: OidcSettings,
        *,
        metadata_ttl: float = 3600.0,
        keys_min_refresh: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metadata_ttl = metadata_ttl
        self.keys_min_refresh = keys_min_refresh
        self.monotonic = monotonic
        self._http: aiohttp.ClientSession | None = None
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._keys_at: float | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        context = ssl.create_default_context(
            cafile=str(self.settings.ca_file) if self.settings.ca_file else None
        )
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=self.settings.http_timeout_s),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if self._http is None:
            raise OidcProviderError("the OIDC client is not started", "provider-unavailable")
        try:
            async with self._http.get(url, headers={"Accept": "application/json"}) as answer:
                if answer.status != 200:
                    raise OidcProviderError(
                        f"the identity provider answered {answer.status} for its {what}",
                        "provider-unavailable",
                    )
                data = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcProviderError(
                f"cannot read the identity provider's {what} at {url}: {exc}",
                "provider-unavailable",
            ) from exc
        if not isinstance(data, dict):
            raise OidcProviderError(f"the provider's {what} is not a JSON object", "provider-bad")
        return data

    # --- discovery -------------------------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        cached = self._metadata
        if cached is not None and self.monotonic() - cached[0] < self.metadata_ttl:
            return cached[1]
        url = self.settings.issuer.rstrip("/") + DISCOVERY_PATH
        doc = await self._get_json(url, "discovery document")
        if doc.get("issuer") != self.settings.issuer:
            raise OidcProviderError(
                f"the discovery document names issuer {doc.get('issuer')!r}, "
                f"not {self.settings.issuer!r}",
                "provider-bad",
            )
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not value.startswith("https://"):
                raise OidcProviderError(
                    f"the provider's {name} is missing or not https", "provider-bad"
                )
            endpoints[name] = value
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcProviderError("the provider does not support PKCE with S256", "provider-bad")
        found = ProviderMetadata(
            issuer=doc["issuer"],
            code_challenge_methods=tuple(m for m in methods or () if isinstance(m, str)),
            **endpoints,
        )
        self._metadata = (self.monotonic(), found)
        return found

    # --- keys ------------------------------------------------------------------------------

    async def keys_for(self, kid: str | None) -> Callable[[str | None], Mapping[str, Any] | None]:
        """A lookup holding the provider's current keys, fetched again first if `kid` is new
        to us (and we have not fetched for `keys_min_refresh`)."""
        async with self._lock:
            stale = self._keys_at is None or (
                self._find(kid) is None
                and self.monotonic() - self._keys_at >= self.keys_min_refresh
            )
            if stale:
                await self._fetch_keys()
        return self._find

    async def _fetch_keys(self) -> None:
        meta = await self.metadata()
        doc = await self._get_json(meta.jwks_uri, "signing keys")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise OidcProviderError("the provider's JWKS has no keys", "provider-bad")
        self._keys = {}
        for key in keys:
            if isinstance(key, dict) and key.get("use", "sig") == "sig":
                kid = key.get("kid")
                self._keys[kid if isinstance(kid, str) else None] = key
        self._keys_at = self.monotonic()

    def _find(self, kid: str | None) -> Mapping[str, Any] | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    # --- the code exchange -----------------------------------------------------------------

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if self.settings.client_secret:
            pair = f"{quote(self.settings.client_id, safe='')}:"
            pair += quote(self.settings.client_secret, safe="")
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.settings.client_id
        if self._http is None:
            raise OidcProviderError("the OIDC client is not started", "provider-unavailable")
        try:
            async with self._http.post(meta.token_endpoint, data=form, headers=headers) as answer:
                status = answer.status
                body = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcProviderError(
                f"cannot exchange the code at the provider: {exc}", "provider-unavailable"
            ) from exc
        if not isinstance(body, dict):
            raise OidcProviderError("the token endpoint answered no JSON object", "provider-bad")
        if status in (400, 401) and isinstance(body.get("error"), str):
            detail = body.get("error_description") or ""
            raise OidcError(
                f"the identity provider refused the code: {body['error']} {detail}".strip(),
                "exchange-refused",
            )
        if status != 200:
            raise OidcProviderError(f"the token endpoint answered {status}", "provider-unavailable")
        if not isinstance(body.get("id_token"), str):
            raise OidcProviderError("the token endpoint gave no ID token", "provider-bad")
        return body
