"""Central policy end to end: real kubectl, the admin CLI as a person types it, the demo topology.

Each test makes its own users, groups and grants, so tests sharing the demo never meet.
Deadlines here guard against hangs; how fast revocation is lives in `kubegate bench revocation`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats as nats_client
import pytest

from broker.server import EmbeddedNats, free_port
from broker.streams import ensure_streams
from tests.e2e.conftest import RunningDemo, as_user, cluster_admin, kubectl_binary, popen
from tests.support import Kubectl, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def kg(demo: RunningDemo, *args: str, config: Path | None = None, stdin: str | None = None):
    out = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env={**os.environ, "KUBEGATE_CONFIG": str(config or demo.demo.admin_conf)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out


def ok(demo: RunningDemo, *args: str, **kw) -> str:
    out = kg(demo, *args, **kw)
    assert out.returncode == 0, f"kubegate {' '.join(args)}: {out.stderr}"
    return out.stdout


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def user_kubectl(demo: RunningDemo, user: str, cluster: str, tmp_path: Path) -> Kubectl:
    path = tmp_path / f"{user}.kubeconfig"
    ok(demo, "kubeconfig", "--user", user, "--cluster", cluster, "-o", str(path))
    return Kubectl(kubectl_binary("1.33"), path, tmp_path / f"cache-{user}")


def test_group_grant_lets_in_and_removal_cuts_watch_and_exec(
    demo: RunningDemo, namespace: str, tmp_path: Path
) -> None:
    user, group = uid("ann"), uid("team")
    ok(demo, "group", "add", group)
    ok(demo, "user", "add", user, "--group", group)
    ok(demo, "grant", "--group", group, "--role", "edit", "--cluster", "dev",
       "--namespace", namespace)  # fmt: skip
    ann = user_kubectl(demo, user, "dev", tmp_path)
    ann("-n", namespace, "run", "box", "--image=busybox")
    ann("-n", namespace, "wait", "--for=condition=Ready", "pod/box", "--timeout=30s")

    watch = popen(ann, "-n", namespace, "get", "pods", "-w")
    assert watch.stdout is not None and "box" in watch.stdout.readline() + watch.stdout.readline()
    controller, terminal = pty.openpty()
    shell = subprocess.Popen(
        [str(ann.binary), "-n", namespace, "exec", "-it", "box", "--", "sh"],
        env=ann.env, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    os.write(controller, b"echo ready-$((6*7))\r")
    seen = b""
    deadline = time.monotonic() + 30
    while b"ready-42" not in seen and time.monotonic() < deadline:
        seen += os.read(controller, 4096)
    assert b"ready-42" in seen

    ok(demo, "group", "remove-member", group, user)
    try:
        watch.wait(10)
        shell.wait(10)
    except subprocess.TimeoutExpired:
        watch.kill()
        shell.kill()
        pytest.fail("removing the member did not cut the live watch and exec session")
    finally:
        os.close(controller)
    refused = ann.run("-n", namespace, "get", "pods", check=False)
    assert refused.returncode == 1 and "Forbidden" in refused.stderr

    def cut_streams() -> list:
        rows = demo.audit(
            "SELECT verb, subresource, ended_by FROM kubectl_events WHERE user = ? AND "
            "type = 'KubectlCompleted' AND ended_by = 'revoked'",
            [user],
        )
        return rows if len(rows) >= 2 else []  # eventually consistent: both rows, not the first

    ended = wait_for(cut_streams, "the cut streams in the audit store")
    assert {(v, s) for v, s, _ in ended} == {("watch", ""), ("create", "exec")}


def test_time_bound_grant_expires_mid_watch(demo, namespace: str, tmp_path: Path) -> None:
    user = uid("tim")
    ok(demo, "user", "add", user)
    granted = ok(demo, "grant", "--user", user, "--role", "view", "--cluster", "dev",
                 "--namespace", namespace, "--for", "6s")  # fmt: skip
    assert "until" in granted
    tim = user_kubectl(demo, user, "dev", tmp_path)
    watch = popen(tim, "-n", namespace, "get", "configmaps", "-w")
    assert watch.stdout is not None and "kube-root-ca.crt" in watch.stdout.readline() + (
        watch.stdout.readline()
    )
    try:
        watch.wait(30)  # nobody publishes anything: the grant's own expiry ends the watch
    except subprocess.TimeoutExpired:
        watch.kill()
        pytest.fail("the watch outlived its grant")
    after = tim.run("-n", namespace, "get", "configmaps", check=False)
    assert after.returncode == 1
    assert "expired" in after.stderr


def test_browser_only_user_is_refused_on_the_cli(demo: RunningDemo, tmp_path: Path) -> None:
    user = uid("bea")
    ok(demo, "user", "add", user)
    ok(demo, "grant", "--user", user, "--role", "view", "--cluster", "dev")
    bea = user_kubectl(demo, user, "dev", tmp_path)
    assert bea.run("-n", "demo", "get", "pods").returncode == 0
    ok(demo, "settings", "set", "breakglass.approver_group=approvers")  # a no-op change is fine
    admin = _admin_client(demo)
    admin.post("/v1/switches/browser-only", {"scope": "user", "target": user, "enabled": True})
    refused = wait_for(
        lambda: (r := bea.run("-n", "demo", "get", "pods", check=False)).returncode == 1 and r,
        "the browser-only switch to reach the edge",
    )
    assert "browser-only" in refused.stderr


def _admin_client(demo: RunningDemo):
    from ops.client import AdminClient
    from ops.config import AdminConfig

    return AdminClient(AdminConfig.load(demo.demo.admin_conf))


def test_session_required_user_is_refused_after_logout(demo: RunningDemo, tmp_path: Path):
    user = uid("sam")
    ok(demo, "user", "add", user)
    ok(demo, "user", "passwd", user, "--password-stdin", stdin="correct horse battery\n")
    ok(demo, "grant", "--user", user, "--role", "view", "--cluster", "dev")
    _admin_client(demo).post(
        "/v1/switches/console-session-required", {"scope": "user", "target": user}
    )
    sam = user_kubectl(demo, user, "dev", tmp_path)
    refused = wait_for(
        lambda: (r := sam.run("-n", "demo", "get", "pods", check=False)).returncode == 1 and r,
        "the session requirement to reach the edge",
    )
    assert "console session is required" in refused.stderr

    conf = tmp_path / "kg" / "admin.conf"
    conf.parent.mkdir()
    conf.write_text(demo.demo.admin_conf.read_text())
    ok(demo, "login", "--user", user, "--password-stdin", config=conf,
       stdin="correct horse battery\n")  # fmt: skip
    wait_for(
        lambda: sam.run("-n", "demo", "get", "pods", check=False).returncode == 0,
        "kubectl to work while the console session lives",
    )
    ok(demo, "logout", config=conf)
    after = wait_for(
        lambda: (r := sam.run("-n", "demo", "get", "pods", check=False)).returncode == 1 and r,
        "kubectl to stop working after logout",
    )
    assert "console session" in after.stderr


def test_kubectl_disabled_for_a_cluster(demo: RunningDemo, tmp_path: Path) -> None:
    user = uid("kim")
    ok(demo, "user", "add", user)
    ok(demo, "grant", "--user", user, "--role", "view", "--cluster", "prod")
    kim = user_kubectl(demo, user, "prod", tmp_path)
    assert kim.run("-n", "demo", "get", "pods").returncode == 0
    ok(demo, "kubectl", "disable", "--user", user, "--reason", "maintenance")
    refused = wait_for(
        lambda: (r := kim.run("-n", "demo", "get", "pods", check=False)).returncode == 1 and r,
        "kubectl disable to reach the edge",
    )
    assert f"kubectl is disabled for user {user}" in refused.stderr
    ok(demo, "kubectl", "enable", "--user", user)
    wait_for(
        lambda: kim.run("-n", "demo", "get", "pods", check=False).returncode == 0,
        "kubectl enable to reach the edge",
    )


def test_break_glass_request_approve_use_expire(demo: RunningDemo, tmp_path: Path) -> None:
    """A sensitive cluster `vault` (served by a relay of its own against the dev API server)."""
    from relay.service import RelayService, RelaySettings

    cluster = uid("vault")
    ok(demo, "cluster", "add", cluster, "--label", "sensitive=true")
    cred = demo.thread.run(demo.demo.control.relay_credentials(cluster))
    relay = RelayService(
        RelaySettings(
            cluster=cluster,
            nats_url=demo.demo.control.nats_url,
            nats_creds=str(cred.save(tmp_path / "vault.creds")),
            kubeconfig=str(demo.sim_kubeconfig("dev")),
            namespace=f"kg-{cluster}",
        )
    )
    demo.thread.run(relay.start())
    try:
        user = uid("eve")
        ok(demo, "user", "add", user)
        ok(demo, "user", "passwd", user, "--password-stdin", stdin="open sesame 123\n")
        ok(demo, "grant", "--user", user, "--role", "edit", "--cluster", cluster)
        ok(demo, "settings", "set", "breakglass.min_duration_s=1")
        eve = user_kubectl(demo, user, cluster, tmp_path)
        # A standing grant on a sensitive cluster reads, but does not write.
        assert eve.run("-n", "demo", "get", "pods").returncode == 0
        denied = eve.run("-n", "demo", "create", "configmap", uid("x"), check=False)
        assert denied.returncode == 1 and "break-glass" in denied.stderr

        conf = tmp_path / "eve" / "admin.conf"
        conf.parent.mkdir()
        conf.write_text(demo.demo.admin_conf.read_text())
        ok(demo, "login", "--user", user, "--password-stdin", config=conf,
           stdin="open sesame 123\n")  # fmt: skip
        session = tmp_path / "eve" / "session.conf"
        asked = ok(
            demo, "breakglass", "request", "--cluster", cluster, "--reason",
            "INC-42 database down", "--for", "8s", "--role", "edit", config=session,
        )  # fmt: skip
        request_id = asked.split()[2]
        self_approval = kg(demo, "breakglass", "approve", request_id, config=session)
        assert self_approval.returncode == 1
        listed = json.loads(
            ok(demo, "breakglass", "list", "--json").splitlines()[-1]
        )  # the admin (an approver) sees it
        assert listed["status"] in ("pending", "approved")
        approved = ok(demo, "breakglass", "approve", request_id, "--reason", "on call")
        assert f"{request_id} approved" in approved

        name = uid("fix")
        wait_for(
            lambda: eve.run("-n", "demo", "create", "configmap", name, check=False).returncode == 0,
            "the break-glass grant to allow writes",
        )
        used = wait_for(
            lambda: demo.audit(
                "SELECT user, cluster, verb FROM breakglass_use_events WHERE request_id = ?",
                [request_id],
            ),
            "the loud BreakGlassUsed record",
        )
        assert (user, cluster, "create") in used

        def refused_again() -> bool:
            late = eve.run("-n", "demo", "create", "configmap", uid("late"), check=False)
            return late.returncode == 1

        wait_for(
            refused_again,
            "the break-glass window to close by itself",
            deadline=30,
        )
        shown = ok(demo, "policy", "show", "--user", user)
        assert cluster in shown and "sensitive" in shown
    finally:
        demo.thread.run(relay.stop())


def test_edge_started_while_nats_is_down_refuses_to_serve(demo: RunningDemo, tmp_path: Path):
    nats_port, edge_port = free_port(), free_port()
    pki = demo.demo.control.data_dir / "pki"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "edge", "--nats", f"nats://127.0.0.1:{nats_port}",
         "--pki", str(pki), "--port", str(edge_port), "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = None
    try:
        admin = as_user(demo, "admin", tmp_path)
        cfg = json.loads(admin("config", "view", "--raw", "-o", "json"))
        cfg["clusters"] = [
            {**c, "cluster": {**c["cluster"], "server": f"https://127.0.0.1:{edge_port}/k8s/dev"}}
            for c in cfg["clusters"]
        ]
        other = tmp_path / "other-edge.kubeconfig"
        other.write_text(json.dumps(cfg))
        via_other = Kubectl(admin.binary, other, tmp_path / "cache-other")
        refused = wait_for(
            lambda: (
                (r := via_other.run("--context", "dev", "get", "ns", check=False)).stderr
                and "ServiceUnavailable" in r.stderr
                and r
            ),
            "the NATS-less edge to answer",
        )
        assert "cannot reach the event log" in refused.stderr
        # NATS comes up (an empty log): the edge now serves from policy, which knows nobody.
        server = EmbeddedNats(data_dir=tmp_path / "nats", port=nats_port)
        server.start()

        async def streams() -> None:
            nc = await nats_client.connect(server.url)
            await ensure_streams(nc.jetstream())
            await nc.close()

        asyncio.run(streams())
        unknown = wait_for(
            lambda: (
                (r := via_other.run("--context", "dev", "get", "ns", check=False)).stderr
                and "provide credentials" in r.stderr
                and r
            ),
            "the edge to serve from its (empty) policy",
        )
        assert "not known to kubegate" in unknown.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        if server is not None:
            server.stop()


def test_cluster_admin_view_unchanged(demo: RunningDemo, tmp_path: Path) -> None:
    """The cluster's own administrator sees the JIT service accounts kubegate made."""
    names = cluster_admin(demo, "dev", tmp_path)("-n", "kubegate-system", "get", "sa", "-o", "name")
    assert "serviceaccount/kg-" in names
