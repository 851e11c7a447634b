"""Central policy end to end: real kubectl, the admin CLI as a person types it, the demo topology.

Each test makes its own users, groups and grants, so tests sharing the demo never meet.
Deadlines here guard against hangs; how fast revocation is lives in `kubegate bench revocation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nats as nats_client
import pytest

from broker.server import EmbeddedNats, free_port
from broker.streams import ensure_streams
from relay.plans import service_account_name
from tests.e2e.conftest import (
    RunningDemo,
    as_user,
    cluster_admin,
    kubectl_binary,
    pod_manifest,
    popen,
)
from tests.support import CuttableLink, Kubectl, wait_for

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


def granted_user(demo: RunningDemo, prefix: str, *grant: str) -> str:
    """A new user holding one grant (`grant`: the `kubegate grant` options after `--user`)."""
    user = uid(prefix)
    ok(demo, "user", "add", user)
    ok(demo, "grant", "--user", user, *grant)
    return user


def user_kubectl(demo: RunningDemo, user: str, cluster: str, tmp_path: Path) -> Kubectl:
    path = tmp_path / f"{user}.kubeconfig"
    ok(demo, "kubeconfig", "--user", user, "--cluster", cluster, "-o", str(path))
    return Kubectl(kubectl_binary("1.33"), path, tmp_path / f"cache-{user}")


def refusal(k: Kubectl, what: str, *args: str, saying: str = "") -> subprocess.CompletedProcess:
    """Poll until kubectl `args` fails (with `saying` in its stderr); that failed run."""
    return wait_for(
        lambda: (r := k.run(*args, check=False)).returncode == 1 and saying in r.stderr and r,
        what,
    )


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


def test_a_cut_the_relay_applies_first_is_audited_as_a_revocation(
    demo: RunningDemo, namespace: str, tmp_path: Path
) -> None:
    """A relay may apply a change that ends a user's access before the edge does: the edge
    records that stream as revoked, with the relay's reason, not as a broken stream."""
    user = granted_user(
        demo, "rhea", "--role", "view", "--cluster", "dev", "--namespace", namespace
    )
    rhea = user_kubectl(demo, user, "dev", tmp_path)
    rhea("-n", namespace, "get", "configmaps")  # the first request provisions her account
    watch = popen(rhea, "-n", namespace, "get", "configmaps", "-w")
    try:
        relay = demo.demo.relays["dev"].server
        wait_for(lambda: relay.live_streams(user), "the watch to reach the relay")
        reason = "access to cluster dev ended (test: the relay was first)"
        assert demo.thread.run(relay.abort_user(user, reason), timeout=30) == 1
        watch.wait(30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    rows = wait_for(
        lambda: demo.audit(
            "SELECT ended_by, reason FROM kubectl_events WHERE user = ? AND "
            "type = 'KubectlCompleted' AND verb = 'watch'",
            [user],
        ),
        "the watch's completion in the audit store",
    )
    assert rows == [("revoked", reason)]


def test_revocation_ends_logs_follow_and_port_forward(
    demo: RunningDemo, namespace: str, tmp_path: Path
) -> None:
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = echo.accept()
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    user = granted_user(demo, "pia", "--role", "edit", "--cluster", "dev", "--namespace", namespace)
    pia = user_kubectl(demo, user, "dev", tmp_path)
    forward_to = {"sim.kubegate.io/port-forward": f"7000=127.0.0.1:{echo.getsockname()[1]}"}
    pia("apply", "-f", "-", stdin=pod_manifest("talker", namespace, forward_to))
    pia("-n", namespace, "wait", "--for=condition=Ready", "pod/talker", "--timeout=30s")
    logs = popen(pia, "-n", namespace, "logs", "-f", "talker")
    forward = popen(pia, "-n", namespace, "port-forward", "pod/talker", ":7000")
    try:
        assert logs.stdout is not None and logs.stdout.readline()
        assert forward.stdout is not None
        local = int(forward.stdout.readline().split("->")[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", local), timeout=20) as conn:
            conn.sendall(b"ping")
            assert conn.recv(100) == b"ping"
            ok(demo, "revoke", "--user", user, "--reason", "offboarding")
            for proc, what in ((logs, "logs -f"), (forward, "port-forward")):
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"revocation did not end {what}")
            conn.settimeout(20)
            with contextlib.suppress(ConnectionError):
                assert conn.recv(100) == b"", "the forwarded connection outlived the revocation"
    finally:
        for proc in (logs, forward):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        echo.close()
    ended = wait_for(
        lambda: demo.audit(
            "SELECT DISTINCT subresource FROM kubectl_events WHERE user = ? AND "
            "type = 'KubectlCompleted' AND ended_by = 'revoked'",
            [user],
        ),
        "the cut streams in the audit store",
    )
    assert {s for (s,) in ended} >= {"log", "portforward"}


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
    # the control plane writes the expiry down after the fact, for audit
    recorded = wait_for(
        lambda: demo.audit(
            "SELECT e.actor, e.expired_at = i.expires_at FROM grant_events e "
            "JOIN grant_events i ON i.grant_id = e.grant_id AND i.type = 'GrantIssued' "
            "WHERE e.type = 'GrantExpired' AND i.subject = ?",
            [user],
        ),
        "GrantExpired in the audit store",
    )
    assert recorded == [("kubegate-expiry", True)]


def test_browser_only_user_is_refused_on_the_cli(demo: RunningDemo, tmp_path: Path) -> None:
    user = granted_user(demo, "bea", "--role", "view", "--cluster", "dev")
    bea = user_kubectl(demo, user, "dev", tmp_path)
    assert bea.run("-n", "demo", "get", "pods").returncode == 0
    said = ok(demo, "kubectl", "browser-only", "--user", user, "--reason", "contractor")
    assert f"browser-only on for user {user}" in said
    refused = refusal(bea, "the browser-only switch to reach the edge", "-n", "demo", "get", "pods")
    assert "browser-only" in refused.stderr
    ok(demo, "kubectl", "browser-only", "--user", user, "--off")
    wait_for(
        lambda: bea.run("-n", "demo", "get", "pods", check=False).returncode == 0,
        "kubectl to work again once browser-only is lifted",
    )


def test_session_required_user_is_refused_after_logout(demo: RunningDemo, tmp_path: Path):
    user = uid("sam")
    ok(demo, "user", "add", user)
    ok(demo, "user", "passwd", user, "--password-stdin", stdin="correct horse battery\n")
    ok(demo, "grant", "--user", user, "--role", "view", "--cluster", "dev")
    ok(demo, "kubectl", "console-session-required", "--user", user)
    sam = user_kubectl(demo, user, "dev", tmp_path)
    refused = refusal(sam, "the session requirement to reach the edge", "-n", "demo", "get", "pods")
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
    after = refusal(sam, "kubectl to stop working after logout", "-n", "demo", "get", "pods")
    assert "console session" in after.stderr


def test_after_revocation_old_kubeconfigs_stay_dead_and_a_new_one_works(
    demo: RunningDemo, tmp_path: Path
) -> None:
    user = granted_user(demo, "rex", "--role", "view", "--cluster", "dev")
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = user_kubectl(demo, user, "dev", tmp_path / "old")
    assert old.run("-n", "demo", "get", "pods").returncode == 0
    ok(demo, "revoke", "--user", user, "--reason", "laptop stolen")
    ok(demo, "user", "enable", user)
    refusal(old, "the old kubeconfig to be refused", "-n", "demo", "get", "pods",
            saying="issued before access was revoked")  # fmt: skip
    fresh = user_kubectl(demo, user, "dev", tmp_path / "new")  # at once: no clock-skew wait
    wait_for(
        lambda: fresh.run("-n", "demo", "get", "pods", check=False).returncode == 0,
        "the new kubeconfig to work",
        deadline=5,
    )


def test_kubectl_disabled_for_a_cluster(demo: RunningDemo, tmp_path: Path) -> None:
    user = granted_user(demo, "kim", "--role", "view", "--cluster", "prod")
    kim = user_kubectl(demo, user, "prod", tmp_path)
    assert kim.run("-n", "demo", "get", "pods").returncode == 0
    ok(demo, "kubectl", "disable", "--user", user, "--reason", "maintenance")
    refused = refusal(kim, "kubectl disable to reach the edge", "-n", "demo", "get", "pods")
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


def edge_process(nats_port: int, pki: Path, port: int, *extra: str) -> subprocess.Popen:
    """`kubegate edge` as an operator runs one more, against NATS on `nats_port`."""
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "edge", "--nats", f"nats://127.0.0.1:{nats_port}",
         "--pki", str(pki), "--port", str(port), "--log-level", "warning", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def through_edge(k: Kubectl, edge_port: int, tmp_path: Path) -> Kubectl:
    """The same user and cluster contexts, through another edge on `edge_port`."""
    cfg = json.loads(k("config", "view", "--raw", "-o", "json"))
    cfg["clusters"] = [
        {**c, "cluster": {**c["cluster"], "server": f"https://127.0.0.1:{edge_port}/k8s/dev"}}
        for c in cfg["clusters"]
    ]
    other = tmp_path / f"edge-{edge_port}.kubeconfig"
    other.write_text(json.dumps(cfg))
    return Kubectl(k.binary, other, tmp_path / f"cache-{edge_port}")


def test_edge_cut_off_fails_closed_and_applies_revocations_before_serving_again(
    demo: RunningDemo, tmp_path: Path
) -> None:
    user = granted_user(demo, "ula", "--role", "view", "--cluster", "dev")
    control = demo.demo.control
    nats_host, _, nats_port = control.nats_url.removeprefix("nats://").rpartition(":")
    link = CuttableLink(nats_host, int(nats_port))
    link_port, edge_port = link.start(), free_port()
    proc = edge_process(link_port, control.data_dir / "pki", edge_port, "--staleness-bound", "2",
                        "--nats-creds", str(control.data_dir / "creds" / "edge.json"))  # fmt: skip
    try:
        ula = through_edge(user_kubectl(demo, user, "dev", tmp_path), edge_port, tmp_path)
        wait_for(
            lambda: ula.run("-n", "demo", "get", "pods", check=False).returncode == 0,
            "the second edge to serve ula",
        )
        link.cut()
        stale = wait_for(
            lambda: (
                (r := ula.run("-n", "demo", "get", "pods", check=False)).returncode == 1
                and "ServiceUnavailable" in r.stderr
                and r
            ),
            "the cut-off edge to refuse with 503",
        )
        assert "cut off from the event log" in stale.stderr
        ok(demo, "revoke", "--user", user, "--reason", "left the company")
        link.restore()
        seen: list[str] = []

        def refused_for_revocation() -> bool:
            r = ula.run("-n", "demo", "get", "pods", check=False)
            seen.append(r.stderr if r.returncode else "SERVED")
            return "issued before access was revoked" in r.stderr  # 401: this cert is dead

        wait_for(refused_for_revocation, "the reconnected edge to apply the revocation")
        assert "SERVED" not in seen, "the edge served with policy older than the revocation"
        assert all("ServiceUnavailable" in e for e in seen[:-1]), seen
    finally:
        proc.terminate()
        proc.wait(10)
        link.close()


def test_edge_started_while_nats_is_down_refuses_to_serve(demo: RunningDemo, tmp_path: Path):
    nats_port, edge_port = free_port(), free_port()
    pki = demo.demo.control.data_dir / "pki"
    proc = edge_process(nats_port, pki, edge_port)
    server = None
    try:
        via_other = through_edge(as_user(demo, "admin", tmp_path), edge_port, tmp_path)
        answer = refusal(via_other, "the NATS-less edge to answer", "--context", "dev", "get",
                         "ns", saying="ServiceUnavailable")  # fmt: skip
        assert "cannot reach the event log" in answer.stderr
        # NATS comes up (an empty log): the edge now serves from policy, which knows nobody.
        server = EmbeddedNats(data_dir=tmp_path / "nats", port=nats_port)
        server.start()

        async def streams() -> None:
            nc = await nats_client.connect(server.url)
            await ensure_streams(nc.jetstream())
            await nc.close()

        asyncio.run(streams())
        unknown = refusal(via_other, "the edge to serve from its (empty) policy", "--context",
                          "dev", "get", "ns", saying="provide credentials")  # fmt: skip
        assert "not known to kubegate" in unknown.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        if server is not None:
            server.stop()


def test_cluster_admin_view_unchanged(demo: RunningDemo, tmp_path: Path) -> None:
    """The cluster's own administrator sees the JIT service accounts kubegate made."""
    user = granted_user(demo, "sa", "--cluster", "dev", "--role", "view")
    user_kubectl(demo, user, "dev", tmp_path)("get", "ns")  # made on the user's first request
    names = cluster_admin(demo, "dev", tmp_path)("-n", "kubegate-system", "get", "sa", "-o", "name")
    assert f"serviceaccount/{service_account_name(user)}" in names.split()
