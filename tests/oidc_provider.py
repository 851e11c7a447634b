"""A small OpenID Connect provider on loopback, for tests (aiohttp, HTTPS).

Standard parts: discovery (`/.well-known/openid-configuration`), a JWKS (`/jwks`) with one RSA
key, an authorization endpoint (`/authorize`) that signs in the configured `user` without a
form and redirects back with a code, and a token endpoint (`/token`) that checks the client's
credentials (HTTP Basic or form), the code (single use, 60 s, same redirect URI) and the PKCE
verifier (S256 only) before it answers with an RS256-signed ID token.

`misbehave` makes the ID tokens it issues wrong in one way, so tests can check each refusal:
`wrong-issuer`, `wrong-audience`, `extra-audience` (a second audience, no azp), `expired`,
`future-iat`, `bad-signature` (another key, same kid), `wrong-nonce`, `no-nonce`, `alg-none`,
`hs256-public-key` (HS256 keyed with the RSA public key: the algorithm confusion attack),
`unknown-kid`. `deny` makes the authorization endpoint answer with that error instead, and
`discovery_issuer` makes discovery name another issuer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

MISBEHAVIOURS = (
    "wrong-issuer",
    "wrong-audience",
    "extra-audience",
    "expired",
    "future-iat",
    "bad-signature",
    "wrong-nonce",
    "no-nonce",
    "alg-none",
    "hs256-public-key",
    "unknown-kid",
)


@dataclass
class IdpUser:
    sub: str
    claims: dict[str, Any] = field(default_factory=dict)
    """Extra ID token claims: preferred_username, name, email, groups, ..."""


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: IdpUser
    issued: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class OidcProvider:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        clock: Callable[[], datetime],
        client_id: str = "kubegate",
        client_secret: str = "kubegate-secret",
        redirect_uris: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.ssl_context = ssl_context
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.host = host
        self.user: IdpUser | None = None
        self.misbehave = ""
        self.deny = ""
        self.discovery_issuer = ""
        self.kid = "key-1"
        self.key = _new_key()
        self.token_requests: list[dict[str, str]] = []
        self._codes: dict[str, _Code] = {}
        self._runner: web.AppRunner | None = None
        self.issuer = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> OidcProvider:
        app = web.Application()
        app.add_routes(
            [
                web.get("/.well-known/openid-configuration", self._discovery),
                web.get("/jwks", self._jwks),
                web.get("/authorize", self._authorize),
                web.post("/token", self._token),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.issuer = f"https://localhost:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- endpoints -------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "scopes_supported": ["openid", "profile", "email", "groups"],
                "grant_types_supported": ["authorization_code"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": [jwk]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return web.json_response({"error": "invalid_request"}, status=400)
        state = q.get("state", "")

        def back(**params: str) -> web.Response:
            query = urllib.parse.urlencode({**params, "state": state})
            return web.Response(status=302, headers={"Location": f"{redirect_uri}?{query}"})

        if q.get("response_type") != "code" or "openid" not in q.get("scope", "").split():
            return back(error="invalid_request")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE S256 required")
        if self.deny:
            return back(error=self.deny, error_description="the test said no")
        if self.user is None:
            return back(error="login_required")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            challenge=q["code_challenge"],
            nonce=q.get("nonce", ""),
            user=self.user,
            issued=self.clock(),
        )
        return back(code=code)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        form = {k: str(v) for k, v in form.items()}
        self.token_requests.append(form)
        client_id, secret = self._client_credentials(request, form)
        if client_id != self.client_id or not hmac.compare_digest(secret, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        grant = self._codes.pop(form.get("code", ""), None)
        if (
            grant is None
            or grant.client_id != client_id
            or grant.redirect_uri != form.get("redirect_uri")
            or self.clock() - grant.issued > timedelta(seconds=60)
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = form.get("code_verifier", "")
        if not verifier or _b64(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"},
                status=400,
            )
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.id_token(grant.user, grant.nonce),
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            pair = base64.b64decode(value).decode()
            user, _, password = pair.partition(":")
            return urllib.parse.unquote(user), urllib.parse.unquote(password)
        return form.get("client_id", ""), form.get("client_secret", "")

    # --- ID tokens -------------------------------------------------------------------------

    def id_token(self, user: IdpUser, nonce: str) -> str:
        now = self.clock()
        iat, exp = now, now + timedelta(minutes=5)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.sub,
            "aud": self.client_id,
            "nonce": nonce,
            **user.claims,
        }
        bad = self.misbehave
        if bad == "wrong-issuer":
            claims["iss"] = self.issuer + "/elsewhere"
        elif bad == "wrong-audience":
            claims["aud"] = "another-client"
        elif bad == "extra-audience":
            claims["aud"] = [self.client_id, "another-client"]
        elif bad == "expired":
            iat, exp = now - timedelta(minutes=8), now - timedelta(minutes=2)
        elif bad == "future-iat":
            iat, exp = now + timedelta(minutes=10), now + timedelta(minutes=15)
        elif bad == "wrong-nonce":
            claims["nonce"] = "not-" + nonce
        elif bad == "no-nonce":
            del claims["nonce"]
        claims["iat"] = int(iat.timestamp())
        claims["exp"] = int(exp.timestamp())
        claims["auth_time"] = int(now.timestamp())
        headers = {"kid": "rotated-away" if bad == "unknown-kid" else self.kid}
        if bad == "alg-none":
            return jwt.encode(claims, None, algorithm="none", headers=headers)
        if bad == "hs256-public-key":
            return self._hs256_with_public_key(claims, headers["kid"])
        key = _new_key() if bad == "bad-signature" else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers=headers)

    def _hs256_with_public_key(self, claims: dict[str, Any], kid: str) -> str:
        """What an attacker forges hoping the verifier uses the public key as an HMAC key
        (PyJWT refuses to make one, so it is built by hand)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"
