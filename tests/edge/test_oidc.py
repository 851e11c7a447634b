"""OIDC logins against a real provider on loopback (tests/oidc_provider.py), over HTTPS, with
the real nats-server: the code flow with PKCE, users created on first login, groups re-synced
at every login, browser cookies, and each ID-token or state check refusing with a clear error
and an audit event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from broker.server import EmbeddedNats
from domain import events
from domain.aggregates import User
from edge.identity_settings import IdentitySettings, OidcSettings
from tests.edge.conftest import Pki
from tests.edge.identity_harness import Answer, Clock, Rig, start_rig, uid
from tests.oidc_provider import IdpUser, OidcProvider


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own: the anonymous failures subject is this test's."""
    server = EmbeddedNats(data_dir=tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(pki: Pki, clock: Clock) -> AsyncIterator[OidcProvider]:
    made = await OidcProvider(pki.server_context(), clock=clock).start()
    yield made
    await made.stop()


def oidc_settings(
    provider: OidcProvider, pki: Pki, **extra: Any
) -> Callable[[str], IdentitySettings]:
    def make(url: str) -> IdentitySettings:
        callback = f"{url}/v1/oidc/callback"
        provider.redirect_uris.append(callback)
        return IdentitySettings(
            oidc=OidcSettings(
                issuer=provider.issuer,
                client_id=provider.client_id,
                client_secret=provider.client_secret,
                redirect_uri=callback,
                ca_file=pki.ca_path,
                **extra,
            )
        )

    return make


@pytest.fixture
async def rig(nats_url: str, pki: Pki, provider: OidcProvider, clock: Clock) -> AsyncIterator[Rig]:
    made = await start_rig(nats_url, pki, oidc_settings(provider, pki), clock=clock)
    yield made
    await made.close()


def person(groups: list[str] | None = None) -> IdpUser:
    name = uid("alice")
    return IdpUser(
        sub=f"sub-{name}",
        claims={
            "preferred_username": name,
            "name": "Alice Example",
            "email": f"{name}@example.test",
            "groups": groups or [],
        },
    )


async def oidc_login(
    rig: Rig, response: str = "json", http: aiohttp.ClientSession | None = None
) -> Answer:
    """Browser steps: our login -> the provider -> our callback (redirects followed by hand)."""
    http = http or rig.http
    async with http.get(f"{rig.url}/v1/oidc/login?response={response}", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        to_provider = r.headers["Location"]
    async with http.get(to_provider, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        back = r.headers["Location"]
    return await get(http, back)


async def get(http: aiohttp.ClientSession, url: str) -> Answer:
    async with http.get(url, allow_redirects=False) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return Answer(r.status, body, r.headers)


async def anonymous_failures(rig: Rig) -> list[Any]:
    return await rig.logged("login", "")


# --- the happy path ---------------------------------------------------------------------------


async def test_first_login_creates_the_user_and_later_logins_resync_groups(
    rig: Rig, provider: OidcProvider
) -> None:
    provider.user = alice = person(["devs", "oncall"])
    name = alice.claims["preferred_username"]
    first = await oidc_login(rig)
    assert first.status == 200, first
    assert first.body["user"] == name and first.body["method"] == "oidc"
    assert first.body["admin"] is False
    me = await rig.call("GET", "/v1/whoami", token=first.body["token"])
    assert me.body["name"] == name and me.body["session_id"] == first.body["session_id"]

    registered, synced = await rig.logged("user", name)
    assert isinstance(registered, events.UserRegistered)
    assert (registered.source, registered.issuer, registered.oidc_subject) == (
        "oidc",
        provider.issuer,
        alice.sub,
    )
    assert registered.email == alice.claims["email"]
    assert isinstance(synced, events.IdpGroupsSynced) and synced.groups == ("devs", "oncall")
    logins = await rig.logged("login", name)
    assert [(type(e), e.method) for e in logins] == [(events.LoginSucceeded, "oidc")]
    started = (await rig.logged("session", first.body["session_id"]))[0]
    assert isinstance(started, events.ConsoleSessionStarted) and started.method == "oidc"

    # PKCE: the verifier the provider checked was sent to the token endpoint
    assert provider.token_requests[-1]["code_verifier"]
    assert "client_secret" not in provider.token_requests[-1], "Basic authentication"

    alice.claims["groups"] = ["oncall", "kubegate-admins"]
    second = await oidc_login(rig)
    assert second.status == 200 and second.body["admin"] is True
    assert second.body["session_id"] != first.body["session_id"]
    user_events = await rig.logged("user", name)
    assert [type(e).__name__ for e in user_events] == [
        "UserRegistered",
        "IdpGroupsSynced",
        "IdpGroupsSynced",
    ]
    assert user_events[-1].groups == ("kubegate-admins", "oncall")

    third = await oidc_login(rig)
    assert third.status == 200
    assert len(await rig.logged("user", name)) == 3, "unchanged groups store nothing"


async def test_the_authorization_request_carries_state_nonce_and_s256(
    rig: Rig, provider: OidcProvider
) -> None:
    async with rig.http.get(f"{rig.url}/v1/oidc/login", allow_redirects=False) as r:
        location = r.headers["Location"]
        cookie = r.cookies["kg_oidc_state"]
    assert location.startswith(f"{provider.issuer}/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["client_id"] == provider.client_id and "openid" in query["scope"].split()
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
    assert len(query["code_challenge"]) == 43
    assert cookie.value == query["state"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"


async def test_browsers_land_on_the_console_with_a_session_cookie(
    nats_url: str, pki: Pki, provider: OidcProvider, clock: Clock
) -> None:
    settings = oidc_settings(provider, pki, console_url="https://console.test/home")
    rig = await start_rig(nats_url, pki, settings, clock=clock)
    try:
        provider.user = person()
        answer = await oidc_login(rig, response="browser")
        assert answer.status == 303 and answer.headers["Location"] == "https://console.test/home"
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith("kg_session="))
        token = cookie.split(";")[0].split("=", 1)[1]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await rig.call("GET", "/v1/whoami", token=token)).status == 200
        out = await rig.call("POST", "/v1/logout", token=token)
        assert out.status == 200
        assert (await rig.call("GET", "/v1/whoami", token=token)).status == 401
    finally:
        await rig.close()


# --- refusals -----------------------------------------------------------------------------

TOKEN_FAILURES = [
    ("wrong-issuer", "bad-issuer"),
    ("wrong-audience", "bad-audience"),
    ("extra-audience", "bad-audience"),
    ("expired", "expired"),
    ("future-iat", "bad-iat"),
    ("bad-signature", "bad-signature"),
    ("wrong-nonce", "bad-nonce"),
    ("no-nonce", "bad-nonce"),
    ("alg-none", "bad-algorithm"),
    ("hs256-public-key", "bad-algorithm"),
    ("unknown-kid", "unknown-key"),
]


@pytest.mark.parametrize(("misbehaviour", "reason"), TOKEN_FAILURES)
async def test_each_id_token_check_refuses(
    rig: Rig, provider: OidcProvider, misbehaviour: str, reason: str
) -> None:
    provider.user = alice = person(["devs"])
    provider.misbehave = misbehaviour
    answer = await oidc_login(rig)
    assert answer.status == 401, answer
    assert answer.body["code"] == "oidc-invalid-token"
    failed = await anonymous_failures(rig)
    assert [(type(e), e.method, e.reason) for e in failed] == [
        (events.LoginFailed, "oidc", f"oidc:{reason}")
    ]
    name = alice.claims["preferred_username"]
    assert rig.control.find(User, name) is None, "no user made from a refused token"

    provider.misbehave = ""
    assert (await oidc_login(rig)).status == 200, "the next honest login works"


async def test_the_provider_refusing_is_reported(rig: Rig, provider: OidcProvider) -> None:
    provider.user = person()
    provider.deny = "access_denied"
    answer = await oidc_login(rig)
    assert answer.status == 401 and "access_denied" in answer.body["error"]
    assert [e.reason for e in await anonymous_failures(rig)] == ["oidc:idp-error"]


async def test_a_callback_is_used_once_and_only_by_its_browser(
    rig: Rig, provider: OidcProvider, pki: Pki
) -> None:
    provider.user = person()
    async with rig.http.get(f"{rig.url}/v1/oidc/login", allow_redirects=False) as r:
        to_provider = r.headers["Location"]
    async with rig.http.get(to_provider, allow_redirects=False) as r:
        back = r.headers["Location"]

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=pki.client_context())
    ) as stranger:
        other = await get(stranger, back)
    assert other.status == 400 and other.body["code"] == "oidc-bad-state"

    replay = await get(rig.http, back)
    assert replay.status == 400, "the stranger's attempt used the state up"
    made_up = await get(rig.http, f"{rig.url}/v1/oidc/callback?state=made-up&code=x")
    assert made_up.status == 400
    reasons = [e.reason for e in await anonymous_failures(rig)]
    assert reasons == ["oidc:bad-state"] * 3


async def test_a_login_that_took_too_long_is_refused(rig: Rig, provider: OidcProvider) -> None:
    provider.user = person()
    async with rig.http.get(f"{rig.url}/v1/oidc/login", allow_redirects=False) as r:
        to_provider = r.headers["Location"]
    async with rig.http.get(to_provider, allow_redirects=False) as r:
        back = r.headers["Location"]
    rig.clock.advance(minutes=10, seconds=1)
    answer = await get(rig.http, back)
    assert answer.status == 400 and "too long" in answer.body["error"]


async def test_a_local_user_of_the_same_name_is_not_taken_over(
    rig: Rig, provider: OidcProvider
) -> None:
    local = await rig.local_user("pw-local")
    provider.user = IdpUser(sub="someone", claims={"preferred_username": local})
    answer = await oidc_login(rig)
    assert answer.status == 403 and answer.body["code"] == "oidc-account"
    logged = await rig.logged("login", local)
    assert [(e.method, e.reason) for e in logged] == [("oidc", "oidc:not-linked")]
    assert [type(e) for e in await rig.logged("user", local)] == [events.UserRegistered]


async def test_another_account_of_the_provider_cannot_take_a_name(
    rig: Rig, provider: OidcProvider
) -> None:
    provider.user = alice = person()
    assert (await oidc_login(rig)).status == 200
    provider.user = IdpUser(sub="impostor", claims=dict(alice.claims))
    answer = await oidc_login(rig)
    assert answer.status == 403 and "not this identity provider account" in answer.body["error"]


async def test_a_disabled_oidc_user_cannot_log_in(rig: Rig, provider: OidcProvider) -> None:
    provider.user = alice = person()
    assert (await oidc_login(rig)).status == 200
    await rig.admin("POST", f"/v1/users/{alice.claims['preferred_username']}/disable", {})
    answer = await oidc_login(rig)
    assert answer.status == 403 and answer.body["code"] == "oidc-account"


async def test_a_token_without_a_usable_name_is_refused(rig: Rig, provider: OidcProvider) -> None:
    provider.user = IdpUser(sub="s", claims={"preferred_username": "has space"})
    answer = await oidc_login(rig)
    assert answer.status == 403 and answer.body["code"] == "oidc-account"


async def test_discovery_must_name_the_configured_issuer(rig: Rig, provider: OidcProvider) -> None:
    provider.discovery_issuer = "https://evil.test"
    async with rig.http.get(f"{rig.url}/v1/oidc/login", allow_redirects=False) as r:
        body = await r.json()
        assert r.status == 502 and body["code"] == "oidc-provider"
        assert "evil.test" in body["error"]


async def test_without_a_provider_oidc_routes_say_so(nats_url: str, pki: Pki) -> None:
    rig = await start_rig(nats_url, pki)
    try:
        answer = await rig.call("GET", "/v1/oidc/login")
        assert answer.status == 404 and answer.body["code"] == "oidc-disabled"
    finally:
        await rig.close()
