"""The web console over the real admin API (HTTPS): the pages and their headers, the /v1/me
endpoints (bearer token and session cookie), and the page's own API client (api.js) driven by
node against the whole stack, shell included."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from argon2 import PasswordHasher

from edge.console.web import STATIC
from tests import tools
from tests.edge import headless
from tests.edge.shell_stack import Stack, cmd, start_stack, stop_stack
from tests.support import Kubectl

pytestmark = pytest.mark.e2e

CHECK = Path(__file__).with_name("console_api_check.mjs")
LOGIN_CHECK = Path(__file__).with_name("console_login_check.mjs")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Stack]:
    try:
        tools.kubectl_133()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    s = start_stack(tmp_path_factory.mktemp("console-e2e"), nats_url)
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def ns(stack: Stack) -> str:
    name = f"web-{uuid.uuid4().hex[:6]}"
    admin = stack.admin()
    admin("create", "namespace", name)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "box", "namespace": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1h"]}]},
    }
    admin("apply", "-f", "-", stdin=json.dumps(pod))
    return name


async def login(stack: Stack, ns: str, prefix: str) -> tuple[str, str, str]:
    user = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    token, session_id = await asyncio.to_thread(stack.sessions.start, user)
    await asyncio.to_thread(stack.wait_reachable, user, token)
    return user, token, session_id


async def get(stack: Stack, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.admin_url + path, ssl=stack.ssl(), allow_redirects=False, **kw) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_console_pages_are_served_with_a_strict_policy(stack: Stack) -> None:
    status, headers, _ = await get(stack, "/console")
    assert status == 308 and headers["Location"] == "/console/"
    status, headers, body = await get(stack, "/console/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (STATIC / "index.html").read_bytes()
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    html = body.decode()
    for asset in ("app.js", "console.css", "vendor/xterm/xterm.css"):
        assert f'"{asset}"' in html
        status, headers, data = await get(stack, f"/console/{asset}")
        assert status == 200 and data == (STATIC / asset).read_bytes()
    status, headers, _ = await get(stack, "/console/vendor/xterm/xterm.mjs")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    # app.js imports exactly what is served
    app = (STATIC / "app.js").read_text()
    for module in ("./api.js", "./vendor/xterm/xterm.mjs", "./vendor/xterm/addon-fit.mjs"):
        assert f'from "{module}"' in app
        status, _, _ = await get(stack, "/console/" + module[2:])
        assert status == 200
    for missing in ("/console/nope.js", "/console/../edge/console/shell.py", "/console/%2e%2e/x"):
        status, _, _ = await get(stack, missing)
        assert status == 404, missing


async def test_me_with_a_bearer_token_or_the_session_cookie(stack: Stack, ns: str) -> None:
    user, token, session_id = await login(stack, ns, "olga")
    status, _, body = await get(stack, "/v1/me/clusters")
    assert status == 401
    for kw in (
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"headers": {"Cookie": f"kg_session={token}"}},
    ):
        status, headers, body = await get(stack, "/v1/me/clusters", **kw)
        assert status == 200, body
        me = json.loads(body)
        assert me["user"] == user and me["session_id"] == session_id
        assert me["clusters"] == [
            {"name": stack.cluster, "display_name": "", "browser_only": False}
        ]
        assert headers["Cache-Control"] == "no-store"
    status, _, body = await get(
        stack, "/v1/me/clusters", headers={"Authorization": f"Bearer {stack.service.admin_token}"}
    )
    assert status == 403 and b"console session" in body


async def test_me_kubeconfig_works_with_real_kubectl(stack: Stack, ns: str, tmp_path: Path) -> None:
    user, token, _ = await login(stack, ns, "pete")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            stack.admin_url + "/v1/me/kubeconfig",
            data="{}",
            headers={"Authorization": f"Bearer {token}"},
            ssl=stack.ssl(),
        ) as resp:
            assert resp.status == 415  # not JSON: what a cross-site form would send
        async with http.post(
            stack.admin_url + "/v1/me/kubeconfig",
            json={"clusters": ["not-mine"]},
            headers={"Authorization": f"Bearer {token}"},
            ssl=stack.ssl(),
        ) as resp:
            assert resp.status == 403
        async with http.post(
            stack.admin_url + "/v1/me/kubeconfig",
            json={"ttl_seconds": 3600},
            headers={"Authorization": f"Bearer {token}"},
            ssl=stack.ssl(),
        ) as resp:
            issued = await resp.json()
            assert resp.status == 201, issued
    assert issued["clusters"] == [stack.cluster]
    config = yaml.safe_load(issued["kubeconfig"])
    assert config["current-context"] == stack.cluster
    path = tmp_path / "kubeconfig"
    path.write_text(issued["kubeconfig"])
    cli = Kubectl(stack.kubectl_binary, path, tmp_path / "cache")
    assert "pod/box" in await asyncio.to_thread(cli, "-n", ns, "get", "pods", "-o", "name")
    rows = await stack.audit_until(
        "SELECT DISTINCT via, session_id FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ?",
        [user],
        lambda rows: len(rows) >= 1,
    )
    assert rows == [["cli", ""]]
    certs = await stack.audit_until(
        "SELECT actor, session_id, serial FROM cert_events "
        "WHERE type = 'CertificateIssued' AND \"user\" = ?",
        [user],
        lambda rows: len(rows) >= 1,
    )
    assert certs == [[user, "", issued["serial"]]]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"node {version.strip()} has no WebSocket")
    return found


def run_node(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node did not finish; it said: {exc.stderr}") from exc


@pytest.mark.parametrize("browser_only", [False, True], ids=["kubeconfig-user", "browser-only"])
async def test_the_page_api_client_against_the_server(
    stack: Stack, ns: str, browser_only: bool
) -> None:
    binary = node()
    user, token, _ = await login(stack, ns, "quin")
    if browser_only:
        await asyncio.to_thread(
            stack.plane.set_browser_only, "user", user, enabled=True, **cmd("browser-only")
        )
        await asyncio.to_thread(
            stack.wait_policy, lambda s: ("user", user) in s.browser_only, "browser-only"
        )
    ran = await asyncio.to_thread(
        run_node,
        [
            binary,
            "--experimental-websocket",
            "--no-warnings",
            str(CHECK),
            (STATIC / "api.js").as_uri(),
            stack.admin_url,
            token,
            stack.cluster,
            ns,
        ],
        {"NODE_EXTRA_CA_CERTS": str(stack.ca_file), "PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["anonymous"] == {"apiError": True, "status": 401}
    assert out["me"]["user"] == user
    assert out["me"]["clusters"] == [
        {"name": stack.cluster, "display_name": "", "browser_only": browser_only}
    ]
    if browser_only:
        assert out["kubeconfig"] == {"apiError": True, "status": 403, "code": "browser-only"}
    else:
        assert out["kubeconfig"]["clusters"] == [stack.cluster]
        assert "client-certificate-data" in out["kubeconfig"]["kubeconfig"]
    shell = out["shell"]
    assert shell["code"] == 1000, shell
    assert shell["events"][0] == "ready" and "uploaded" in shell["events"]
    assert "pod/box" in shell["text"]
    assert out["downloaded"] == "hello from node"


async def test_password_login_and_logout_through_the_page_client(stack: Stack, ns: str) -> None:
    binary = node()
    user = f"rita-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    password = "correct horse battery staple"
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    status, body = await stack.call(
        "POST", f"/v1/users/{user}/password-hash", body={"password_hash": cheap.hash(password)}
    )
    assert status == 200, body
    await asyncio.to_thread(
        stack.wait_policy, lambda s: user in s.users, "the user in the admin API's policy"
    )
    ran = await asyncio.to_thread(
        run_node,
        [
            binary,
            "--no-warnings",
            str(LOGIN_CHECK),
            (STATIC / "api.js").as_uri(),
            stack.admin_url,
            user,
            password,
        ],
        {"NODE_EXTRA_CA_CERTS": str(stack.ca_file), "PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out == {
        "wrongPassword": 401,
        "session": {"user": user, "stored": True},
        "me": user,
        "oidcUrl": stack.admin_url + "/v1/oidc/login?response=browser",
        "storedAfterLogout": None,
        "meAfterLogout": 401,
    }


async def test_the_console_in_a_real_browser(stack: Stack, ns: str, tmp_path: Path) -> None:
    binary = headless.chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    user = f"sam-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    password = "a browser password"
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    status, body = await stack.call(
        "POST", f"/v1/users/{user}/password-hash", body={"password_hash": cheap.hash(password)}
    )
    assert status == 200, body
    rows = "((document.querySelector('#terminal .xterm-rows') || {}).innerText || '')"
    async with headless.Browser(binary, tmp_path / "profile") as browser:
        page = await browser.open(stack.admin_url + "/console/")
        await page.until("!document.getElementById('login-view').hidden", "the login form")
        await page.evaluate(
            f"document.getElementById('login-user').value = {json.dumps(user)};"
            f"document.getElementById('login-password').value = {json.dumps(password)};"
            "document.getElementById('login-form').requestSubmit()"
        )
        options = await page.until(
            "!document.getElementById('main-view').hidden && "
            "[...document.getElementById('cluster').options].map(o => o.value)",
            "the cluster picker",
        )
        assert options == [stack.cluster]
        assert await page.evaluate("document.getElementById('user-name').textContent") == user
        assert not await page.evaluate("document.getElementById('download-kubeconfig').disabled")

        await page.evaluate("document.getElementById('open-shell').click()")
        await page.until(f"{rows}.includes('{stack.cluster} $')", "the shell prompt")
        await page.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
        await page.type(f"kubectl get pods -n {ns} -o name")
        await page.enter()
        await page.until(f"{rows}.includes('pod/box')", "kubectl's answer in the terminal")

        await page.evaluate("document.getElementById('logout').click()")
        await page.until("!document.getElementById('login-view').hidden", "the login form again")
        assert page.problems == []
    await asyncio.to_thread(
        stack.wait_policy,
        lambda s: (
            [x for x in s.sessions.values() if x.user == user]
            and all(x.ended_at is not None for x in s.sessions.values() if x.user == user)
        ),
        "the browser's session ended by the logout",
    )
    rows_seen = await stack.audit_until(
        "SELECT DISTINCT via FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND resource = 'pods'",
        [user],
        lambda r: len(r) >= 1,
        deadline=10,
    )
    assert rows_seen == [["browser"]]
