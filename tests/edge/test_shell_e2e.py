"""The browser shell end to end: a WebSocket to the admin API, real kubectl under a pty, through
the real edge (mutual TLS with the shell's session certificate), NATS, a relay and the
simulator. Checks identity (via=browser, tied to the session), browser-only users, refused
lines, logout, idle shells, ^C and `exec -it`."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests import tools
from tests.edge.shell_stack import ShellClient, Stack, cmd, start_stack, stop_stack
from tests.support import Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Stack]:
    try:
        tools.kubectl_133()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    s = start_stack(tmp_path_factory.mktemp("shell-e2e"), nats_url)
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def ns(stack: Stack) -> str:
    """A namespace with one running pod, `box`."""
    name = f"demo-{uuid.uuid4().hex[:6]}"
    admin = stack.admin()
    admin("create", "namespace", name)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "box", "namespace": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1h"]}]},
    }
    admin("apply", "-f", "-", stdin=json.dumps(pod))
    admin("-n", name, "wait", "--for=condition=Ready", "pod/box", "--timeout=60s")
    return name


async def user_with_session(stack: Stack, ns: str, prefix: str) -> tuple[str, str, str]:
    """A user with an edit grant on `ns` and a live console session: (user, token, session)."""
    user = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    token, session_id = await asyncio.to_thread(stack.sessions.start, user)
    await asyncio.to_thread(stack.wait_reachable, user, token)
    return user, token, session_id


def runs(stack: Stack) -> float:
    value = stack.service.registry.get_sample_value(
        "kubegate_console_shell_commands_total", {"program": "kubectl", "outcome": "run"}
    )
    return value or 0.0


async def test_shell_runs_kubectl_as_the_session(stack: Stack, ns: str) -> None:
    user, token, session_id = await user_with_session(stack, ns, "alice")
    shell = await ShellClient.connect(stack, token)
    try:
        ready = await shell.ready()
        assert (ready["user"], ready["cluster"], ready["session_id"]) == (
            user,
            stack.cluster,
            session_id,
        )
        out = await shell.run(f"kubectl get pods -n {ns}")
        assert "NAME" in out and "box" in out and "Running" in out, out
        denied = await shell.run("kubectl get pods -n default")
        assert "Forbidden" in denied and "[exit 1]" in denied, denied
    finally:
        await shell.close()

    rows = await stack.audit_until(
        "SELECT via, session_id, verb, resource, namespace, decision FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND resource = 'pods' ORDER BY seq",
        [user],
        lambda rows: len(rows) >= 2,
    )
    assert ["browser", session_id, "list", "pods", ns, "allow"] in rows
    assert ["browser", session_id, "list", "pods", "default", "deny"] in rows
    assert all(r[0] == "browser" and r[1] == session_id for r in rows)
    certs = await stack.audit_until(
        "SELECT session_id, clusters FROM cert_events "
        "WHERE type = 'CertificateIssued' AND \"user\" = ?",
        [user],
        lambda rows: len(rows) >= 1,
    )
    assert certs == [[session_id, [stack.cluster]]]


async def test_first_message_authentication(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "carol")
    shell = await ShellClient.connect(stack, token, auth="message")
    try:
        await shell.ready()
        assert "box" in await shell.run(f"kubectl get pods -n {ns} -o name")
    finally:
        await shell.close()


async def test_browser_only_user_refused_on_the_cli_allowed_in_the_shell(
    stack: Stack, ns: str, tmp_path: Path
) -> None:
    user, token, _ = await user_with_session(stack, ns, "bob")
    await asyncio.to_thread(
        stack.plane.set_browser_only, "user", user, enabled=True, **cmd("browser-only")
    )
    await asyncio.to_thread(
        stack.wait_policy, lambda s: ("user", user) in s.browser_only, "browser-only switch"
    )
    bearer = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            stack.admin_url + "/v1/me/clusters", headers=bearer, ssl=stack.ssl()
        ) as resp:
            me = await resp.json()
        assert me["clusters"] == [{"name": stack.cluster, "display_name": "", "browser_only": True}]
        async with http.post(
            stack.admin_url + "/v1/me/kubeconfig", json={}, headers=bearer, ssl=stack.ssl()
        ) as resp:
            refused = await resp.json()
            assert resp.status == 403 and refused["code"] == "browser-only", refused
        # a kubeconfig an administrator made anyway is refused by the edge
        async with http.post(
            stack.admin_url + "/v1/kubeconfigs",
            json={"user": user, "clusters": [stack.cluster]},
            headers={"Authorization": f"Bearer {stack.service.admin_token}"},
            ssl=stack.ssl(),
        ) as resp:
            assert resp.status == 201
            made = await resp.json()
    path = tmp_path / "bob.kubeconfig"
    path.write_text(made["kubeconfig"])
    cli = Kubectl(stack.kubectl_binary, path, tmp_path / "cache")
    ran = await asyncio.to_thread(cli.run, "-n", ns, "get", "pods", check=False)
    assert ran.returncode != 0 and "Forbidden" in ran.stderr, ran.stderr
    denied = await stack.audit_until(
        "SELECT DISTINCT via, decision, reason FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND via = 'cli'",
        [user],
        lambda rows: len(rows) >= 1,
    )
    assert len(denied) == 1 and denied[0][:2] == ["cli", "deny"], denied
    assert "browser-only" in denied[0][2]

    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        out = await shell.run(f"kubectl get pods -n {ns}")
        assert "box" in out and "Forbidden" not in out, out
    finally:
        await shell.close()


REFUSED = [
    "ls",
    "kubectl config view --raw",
    "kubectl --kubeconfig=/etc/x get pods",
    "kubectl apply -f /etc/passwd",
    "kubectl get pods | grep box",
    "kubectl get pods -n $NS",
]


async def test_refused_lines_answer_one_line_and_run_nothing(stack: Stack, ns: str) -> None:
    user, token, _ = await user_with_session(stack, ns, "dave")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        before = runs(stack)
        for line in REFUSED:
            out = await shell.run(line)
            lines = out.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("refused:"), (line, out)
        assert runs(stack) == before
        out = await shell.run(f"kubectl get configmaps -n {ns}")  # a marker after them
        assert runs(stack) == before + 1
    finally:
        await shell.close()
    rows = await stack.audit_until(
        "SELECT verb, resource, namespace FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND resource = 'configmaps'",
        [user],
        lambda rows: len(rows) >= 1,
    )
    everything = await stack.audit(
        "SELECT verb, resource, namespace FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND resource <> ''",
        [user],
    )  # (kubectl's discovery reads aside)
    assert everything == rows == [["list", "configmaps", ns]]


async def test_logout_closes_the_shell_and_its_certificate_stops_working(
    stack: Stack, ns: str, tmp_path: Path
) -> None:
    user, token, session_id = await user_with_session(stack, ns, "erin")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        assert "box" in await shell.run(f"kubectl get pods -n {ns}")
        (open_shell,) = stack.service.console.shells.of_session(session_id)  # type: ignore[union-attr]
        shell_dir = open_shell.dir
        stolen = tmp_path / "stolen.kubeconfig"
        shutil.copy(open_shell.kubeconfig, stolen)
        cli = Kubectl(stack.kubectl_binary, stolen, tmp_path / "cache")
        assert "box" in await asyncio.to_thread(cli, "-n", ns, "get", "pods")

        # a watch through the copied certificate, outside the shell
        watch = cli.popen("-n", ns, "get", "pods", "-w", "--request-timeout=0")
        assert watch.stdout is not None
        first = await asyncio.to_thread(watch.stdout.readline)
        assert "NAME" in first or "box" in first, first

        start = len(shell.raw)
        await shell.type(f"kubectl get pods -n {ns} -w\r".encode())
        await shell.until(b"box", start + 10)  # the list before the watch
        await stack.audit_until(  # both watches have reached the edge
            "SELECT seq FROM kubectl_events WHERE type = 'KubectlRequested' "
            "AND \"user\" = ? AND verb = 'watch'",
            [user],
            lambda rows: len(rows) >= 2,
        )
        await stack.logout(token)  # POST /v1/logout, as the console does
        code = await shell.wait_closed()
        assert code == 4410
        closed = [e for e in shell.events if e["type"] == "closed"]
        assert closed and "ended (logout)" in closed[0]["reason"], shell.events
        try:  # the edge cut the outside watch too
            await asyncio.wait_for(asyncio.to_thread(watch.wait), 30)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
    finally:
        await shell.close()
    cut = await stack.audit_until(
        "SELECT ended_by FROM kubectl_events WHERE type = 'KubectlCompleted' "
        "AND \"user\" = ? AND verb = 'watch'",
        [user],
        lambda rows: len(rows) >= 2,
    )
    assert ["revoked"] in cut, cut  # cut by the edge, not ended by the client
    ran = await asyncio.to_thread(cli.run, "-n", ns, "get", "pods", check=False)
    assert ran.returncode != 0
    assert "must be logged in" in ran.stderr or "Unauthorized" in ran.stderr, ran.stderr
    assert not shell_dir.exists()
    assert stack.service.console.shells.of_session(session_id) == []  # type: ignore[union-attr]


async def test_session_over_refuses_new_shells(stack: Stack, ns: str) -> None:
    _, token, session_id = await user_with_session(stack, ns, "frank")
    await stack.logout(token)
    await asyncio.to_thread(
        stack.wait_policy,
        lambda s: s.sessions[session_id].ended_at is not None,
        "the session's end",
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ShellClient.connect(stack, token)
    assert refused.value.status == 401


async def test_refusals_before_the_shell_opens(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "gina")
    with pytest.raises(aiohttp.WSServerHandshakeError) as bad:
        await ShellClient.connect(stack, "not-a-token")
    assert bad.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as admin:
        await ShellClient.connect(stack, stack.service.admin_token)
    assert admin.value.status == 401

    wrong = await ShellClient.connect(stack, "not-a-token", auth="message")
    try:
        assert await wrong.wait_closed() == 4401
    finally:
        await wrong.close()

    elsewhere = await ShellClient.connect(stack, token, cluster="no-such-cluster")
    try:
        assert await elsewhere.wait_closed() == 4403
        assert "not one you may reach" in elsewhere.events[0]["message"]
    finally:
        await elsewhere.close()

    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as origin:
            await http.ws_connect(
                f"{stack.admin_url}/v1/shell?cluster={stack.cluster}",
                headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
                ssl=stack.ssl(),
            )
        assert origin.value.status == 403


async def test_idle_shell_closes(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "hank")
    settings = stack.service.console.shells.settings  # type: ignore[union-attr]
    saved, settings.idle_timeout_s = settings.idle_timeout_s, 0.5
    try:
        shell = await ShellClient.connect(stack, token)
        try:
            await shell.ready()
            assert await shell.wait_closed() == 4408
        finally:
            await shell.close()
    finally:
        settings.idle_timeout_s = saved
    assert any(e["type"] == "closed" and "idle" in e["reason"] for e in shell.events)


async def test_ctrl_c_interrupts_a_watch(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "ivan")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        start = len(shell.raw)
        await shell.type(f"kubectl get pods -n {ns} --watch\r".encode())
        await shell.until(b"box", start + 10)
        await shell.type(b"\x03")
        await shell.until(b"^C\r\n", start)
        await shell.until(shell.prompt, start)
        assert "box" in await shell.run(f"kubectl get pods -n {ns} -o name")
    finally:
        await shell.close()


async def test_exec_it_is_a_terminal(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "judy")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        await shell.ws.send_str(json.dumps({"type": "resize", "cols": 101, "rows": 33}))
        start = len(shell.raw)
        await shell.type(f"kubectl exec -it box -n {ns} -- sh\r".encode())
        await shell.type(b"echo $((6*7)) done; stty size\r")
        await shell.until(b"42 done", start)
        await shell.until(b"33 101", start)
        await shell.type(b"exit\r")
        await shell.until(shell.prompt, start)
        assert "box" in await shell.run(f"kubectl get pods -n {ns} -o name")
    finally:
        await shell.close()


async def test_upload_then_apply(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "kate")
    shell = await ShellClient.connect(stack, token)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "uploaded", "namespace": ns},
        "data": {"k": "v"},
    }
    try:
        await shell.ready()
        data = base64.b64encode(json.dumps(manifest).encode()).decode()
        await shell.ws.send_str(json.dumps({"type": "upload", "name": "cm.json", "data": data}))
        uploaded = await shell.event("uploaded")
        assert uploaded["name"] == "cm.json"
        assert "cm.json" in await shell.run("files")
        out = await shell.run("kubectl apply -f cm.json")
        assert "configmap/uploaded created" in out, out
        await shell.ws.send_str(json.dumps({"type": "download", "name": "cm.json"}))
        got = await shell.event("file")
        assert json.loads(base64.b64decode(got["data"])) == manifest
        await shell.ws.send_str(json.dumps({"type": "upload", "name": "../x", "data": data}))
        assert "plain file name" in (await shell.event("error"))["message"]
    finally:
        await shell.close()
    assert "uploaded" in await asyncio.to_thread(
        stack.admin(), "-n", ns, "get", "configmap", "uploaded", "-o", "name"
    )


async def test_exit_closes_the_shell(stack: Stack, ns: str) -> None:
    _, token, _ = await user_with_session(stack, ns, "leo")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        await shell.type(b"exit\r")
        assert await shell.wait_closed() == 1000
    finally:
        await shell.close()


async def test_session_expiry_closes_the_shell(stack: Stack, ns: str) -> None:
    user = f"mia-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    token, _ = await asyncio.to_thread(stack.sessions.start, user, ttl=dt.timedelta(seconds=4))
    await asyncio.to_thread(stack.wait_reachable, user, token)
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        assert await shell.wait_closed() == 4410  # nobody ended it: the expiry did
    finally:
        await shell.close()
    closed = [e for e in shell.events if e["type"] == "closed"]
    assert closed and "expired" in closed[0]["reason"], shell.events


async def test_revoking_the_user_closes_the_shell(stack: Stack, ns: str) -> None:
    user, token, _ = await user_with_session(stack, ns, "nora")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        await asyncio.to_thread(stack.plane.revoke_user_access, user, **cmd("revoke"))
        assert await shell.wait_closed() == 4410
    finally:
        await shell.close()
    closed = [e for e in shell.events if e["type"] == "closed"]
    assert closed and "disabled" in closed[0]["reason"], shell.events


async def test_helm_runs_with_the_session_identity(stack: Stack, ns: str) -> None:
    user, token, session_id = await user_with_session(stack, ns, "otto")
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        out = await shell.run(f"helm list -n {ns}")
        assert "NAME" in out and "[exit" not in out, out
        refused = await shell.run("helm list --kube-context other")
        assert refused.strip().startswith("refused:"), refused
    finally:
        await shell.close()
    rows = await stack.audit_until(
        "SELECT DISTINCT via, session_id, resource FROM kubectl_events "
        "WHERE type = 'KubectlRequested' AND \"user\" = ? AND resource = 'secrets'",
        [user],
        lambda rows: len(rows) >= 1,
    )
    assert rows == [["browser", session_id, "secrets"]]  # helm keeps releases in secrets


async def test_an_idle_session_closes_its_shell(stack: Stack, ns: str) -> None:
    user = f"pia-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.user, user, namespaces=(ns,))
    token, _ = await asyncio.to_thread(stack.sessions.start, user, idle_s=3)
    await asyncio.to_thread(stack.wait_reachable, user, token)
    shell = await ShellClient.connect(stack, token)
    try:
        await shell.ready()
        assert await shell.wait_closed() == 4410  # no activity on the session for 3 s
    finally:
        await shell.close()
    closed = [e for e in shell.events if e["type"] == "closed"]
    assert closed and "idle" in closed[0]["reason"], shell.events
