"""Authentication: static bearer tokens, service-account JWTs, client certificates.

Service-account tokens are JWTs signed with the simulator's key (RS256, the claims kube-apiserver
puts in bound tokens). A token stops authenticating when it expires or when its service account is
deleted or recreated (uid check), as with bound tokens on a real cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from ops.sim.errors import TokenError

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class UserInfo:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out


def with_authenticated(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = list(groups)
    if AUTHENTICATED not in out and "system:unauthenticated" not in out:
        out.append(AUTHENTICATED)
    return tuple(out)


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        uid,
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


# (namespace, name) -> uid of the live service account, or None
AccountLookup = Callable[[str, str], str | None]


class TokenIssuer:
    """Mints and verifies service-account JWTs.

    Time comes from `clock` (unix seconds), so tests can run a cluster's token lifetimes
    faster than the wall clock; expiry is therefore checked here, not by the JWT library.
    """

    def __init__(
        self, private_key: Any, lookup: AccountLookup, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self._lookup = lookup
        self._clock = clock

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        ttl_seconds: float,
        audiences: list[str] | None = None,
        bound: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A token for the account and its expiry (unix seconds)."""
        issued = int(now if now is not None else self._clock())
        exp = issued + max(1, int(ttl_seconds))
        k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}
        if bound:
            k8s[bound["kind"].lower()] = {
                "name": bound.get("name", ""),
                "uid": bound.get("uid", ""),
            }
        claims = {
            "aud": audiences or [DEFAULT_AUDIENCE],
            "exp": exp,
            "iat": issued,
            "nbf": issued,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": k8s,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": "sim"})
        return token, exp

    def verify(self, token: str, audiences: list[str] | None = None) -> tuple[UserInfo, dict]:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                audience=audiences or [DEFAULT_AUDIENCE],
                issuer=ISSUER,
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid service account token: {exc}") from exc
        now = self._clock()
        if not isinstance(claims["exp"], int | float) or now >= claims["exp"]:
            raise TokenError("invalid service account token: Signature has expired")
        if isinstance(claims.get("nbf"), int | float) and now < claims["nbf"]:
            raise TokenError("invalid service account token: The token is not yet valid (nbf)")
        k8s = claims.get("kubernetes.io") or {}
        namespace = k8s.get("namespace", "")
        account = (k8s.get("serviceaccount") or {}).get("name", "")
        uid = (k8s.get("serviceaccount") or {}).get("uid", "")
        live = self._lookup(namespace, account)
        if live is None or live != uid:
            raise TokenError("service account has been deleted or recreated")
        return service_account_user(namespace, account, uid), claims


class Authenticator:
    """Maps a request's credentials to a `UserInfo`, or None (the API then answers 401)."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self._static: dict[str, UserInfo] = {}

    def add_token(self, token: str, user: UserInfo) -> None:
        self._static[token] = user

    def from_token(self, token: str) -> UserInfo | None:
        user = self._static.get(token)
        if user is not None:
            return user
        if token.count(".") != 2:
            return None
        try:
            return self.issuer.verify(token)[0]
        except TokenError:
            return None
