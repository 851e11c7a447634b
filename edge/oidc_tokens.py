"""ID token validation (OpenID Connect Core 1.0, section 3.1.3.7), given the provider's keys.

PyJWT verifies the JWS signature and the `iss`/`aud` claims; this module decides which key
and algorithm may be used and checks the rest, with the caller's clock:

- the header's `alg` must be one of the configured asymmetric algorithms (so `none` and the
  HS256-with-a-public-key confusion are refused before any key is touched), and the key
  (chosen by `kid`) must be of that algorithm's family, for signatures, and declare the same
  `alg` if it declares one;
- `iss` equals the configured issuer exactly; `aud` contains our client id, and when it holds
  several audiences `azp` must be our client id (as must any `azp`);
- `exp` in the future, `iat` not in the future and not older than `max_token_age`, `nbf` (if
  any) passed, each with `leeway`;
- `nonce` equals the one this login sent (constant-time).

Every refusal is an `IdTokenError` whose `reason` names the failed check.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWKError,
    PyJWTError,
)

from edge.errors import IdTokenError
from edge.identity_settings import OidcSettings

KeyLookup = Callable[[str | None], Mapping[str, Any] | None]
"""kid -> the provider's JWK (a dict), or None when the provider has no such key."""

_KTY_OF_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
REQUIRED = ["iss", "aud", "sub", "exp", "iat"]


def unverified_header(raw: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(raw)
    except DecodeError as exc:
        raise IdTokenError(f"the ID token is not a JWS: {exc}", "malformed") from exc
    return header


def _key_for(header: Mapping[str, Any], keys: KeyLookup, settings: OidcSettings) -> PyJWK:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.algorithms:
        raise IdTokenError(f"ID token algorithm {alg!r} is not accepted", "bad-algorithm")
    kid = header.get("kid")
    jwk = keys(kid if isinstance(kid, str) else None)
    if jwk is None:
        raise IdTokenError(f"the provider has no signing key {kid!r}", "unknown-key")
    if jwk.get("kty") != _KTY_OF_ALG.get(alg[:2]):
        raise IdTokenError(f"key {kid!r} is not a {alg} key", "bad-algorithm")
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        raise IdTokenError(f"key {kid!r} is not for {alg} signatures", "bad-algorithm")
    try:
        return PyJWK(dict(jwk), algorithm=alg)
    except PyJWKError as exc:
        raise IdTokenError(f"unusable provider key {kid!r}: {exc}", "unknown-key") from exc


def _instant(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenError(f"ID token claim {name} is not a number", "malformed")
    return datetime.fromtimestamp(value, tz=UTC)


def validate_id_token(
    raw: str,
    *,
    keys: KeyLookup,
    settings: OidcSettings,
    nonce: str,
    now: datetime,
) -> dict[str, Any]:
    """The ID token's claims, once every check above has passed."""
    header = unverified_header(raw)
    key = _key_for(header, keys, settings)
    try:
        claims = jwt.decode(
            raw,
            key,
            algorithms=[key.algorithm_name],
            audience=settings.client_id,
            issuer=settings.issuer,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": REQUIRED,
            },
        )
    except InvalidSignatureError as exc:
        raise IdTokenError("the ID token's signature does not verify", "bad-signature") from exc
    except InvalidIssuerError as exc:
        raise IdTokenError("the ID token comes from another issuer", "bad-issuer") from exc
    except InvalidAudienceError as exc:
        raise IdTokenError("the ID token is meant for another client", "bad-audience") from exc
    except MissingRequiredClaimError as exc:
        raise IdTokenError(f"the ID token lacks {exc.claim}", "missing-claim") from exc
    except PyJWTError as exc:
        raise IdTokenError(f"the ID token is malformed: {exc}", "malformed") from exc

    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
        raise IdTokenError("the ID token was issued to another party (azp)", "bad-audience")

    leeway = settings.leeway
    expires = _instant(claims, "exp")
    issued = _instant(claims, "iat")
    not_before = _instant(claims, "nbf")
    assert expires is not None and issued is not None  # required above
    if now >= expires + leeway:
        raise IdTokenError("the ID token has expired", "expired")
    if issued > now + leeway:
        raise IdTokenError("the ID token is issued in the future", "bad-iat")
    if now - issued > settings.max_token_age + leeway:
        raise IdTokenError("the ID token is too old", "bad-iat")
    if not_before is not None and not_before > now + leeway:
        raise IdTokenError("the ID token is not valid yet", "bad-iat")

    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise IdTokenError("the ID token's nonce is not this login's", "bad-nonce")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise IdTokenError("the ID token's subject is empty", "missing-claim")
    return claims
