"""Vanilla kubectl (1.32 and 1.33) through the demo topology: edge -> NATS -> relay -> cluster.

Everything here is what a person types; each test checks what kubectl prints and what the
audit store recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from edge import kubeconfig as kcfg
from edge.ca import CertificateAuthority
from tests.e2e.conftest import (
    KUBECTL_VERSIONS,
    RunningDemo,
    as_user,
    cluster_admin,
    pod_manifest,
    popen,
)
from tests.support import Kubectl, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_get_apply_delete_as_alice(demo: RunningDemo, namespace: str, tmp_path: Path, version):
    alice = as_user(demo, "alice", tmp_path, version)
    alice("--context", "dev", "-n", namespace, "create", "configmap", "app", "--from-literal=a=1")
    alice("--context", "dev", "-n", namespace, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": namespace}, "data": {"a": "2"},
    }))  # fmt: skip
    got = json.loads(alice("--context", "dev", "-n", namespace, "get", "cm", "app", "-o", "json"))
    assert got["data"] == {"a": "2"}
    table = alice("--context", "dev", "-n", namespace, "get", "configmaps")
    assert table.splitlines()[0].split()[:2] == ["NAME", "DATA"]
    alice("--context", "dev", "-n", namespace, "delete", "cm", "app")
    gone = alice.run("--context", "dev", "-n", namespace, "get", "cm", "app", check=False)
    assert gone.returncode == 1 and 'configmaps "app" not found' in gone.stderr

    def alices_requests() -> list:
        rows = demo.audit(
            "SELECT verb, resource, name, status FROM kubectl_events WHERE type = "
            "'KubectlCompleted' AND user = 'alice' AND namespace = ? ORDER BY seq",
            [namespace],
        )
        # the audit store is eventually consistent: wait for the last request's row
        return rows if ["get", "configmaps", "app", 404] in [list(r) for r in rows] else []

    rows = wait_for(alices_requests, "alice's requests in the audit store")
    verbs = [(v, r, n, s) for v, r, n, s in rows]
    assert ("create", "configmaps", "", 201) in verbs
    assert ("delete", "configmaps", "app", 200) in verbs
    assert ("get", "configmaps", "app", 404) in verbs


def test_denied_request_is_a_status_and_an_audit_event(demo: RunningDemo, tmp_path: Path):
    bob = as_user(demo, "bob", tmp_path)
    denied = bob.run("--context", "prod", "-n", "demo", "delete", "deployment", "web", check=False)
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        "Error from server (Forbidden): no grant allows bob to delete deployments.apps/web "
        "in namespace demo on cluster prod"
    )
    # An Impersonate-User header (kubectl --as) is dropped: still bob, still refused.
    impersonating = bob.run(
        "--context", "prod", "--as", "admin", "-n", "demo", "delete", "deployment", "web",
        check=False,
    )  # fmt: skip
    assert impersonating.returncode == 1
    assert "no grant allows bob to delete" in impersonating.stderr
    assert "web" in bob("--context", "prod", "-n", "demo", "get", "deployments")

    def bobs_denials() -> list:
        sql = ("SELECT decision, status, reason FROM kubectl_events WHERE user = 'bob' "
               "AND verb = 'delete' AND type = 'KubectlCompleted'")  # fmt: skip
        rows = demo.audit(sql)
        return rows if len(rows) >= 2 else []

    rows = wait_for(bobs_denials, "bob's denials in the audit store")
    assert len(rows) == 2
    assert all(r[0] == "deny" and r[1] == 403 and "no grant allows bob" in r[2] for r in rows)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("foreign-ca", "remote error: tls: unknown certificate authority"),
        ("expired", "remote error: tls: expired certificate"),
    ],
)
def test_foreign_and_expired_certificates_are_refused(
    demo: RunningDemo, tmp_path: Path, case: str, message: str
) -> None:
    control = demo.demo.control
    if case == "foreign-ca":
        issued = CertificateAuthority.create("someone else's CA").issue_client(
            "admin", dt.timedelta(hours=1)
        )
    else:
        issued = control.ca.issue_client(
            "admin", dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        )
    config = kcfg.build(
        user="admin", edge_url=control.edge_url, ca_pem=control.ca.cert_pem, cert=issued,
        clusters=["dev"],
    )  # fmt: skip
    path = tmp_path / f"{case}.kubeconfig"
    path.write_text(kcfg.render(config))
    refused = Kubectl(as_user(demo, "admin", tmp_path).binary, path, tmp_path / "cache-x")
    out = refused.run("get", "pods", "-n", "demo", check=False)
    assert out.returncode == 1
    assert f"Unable to connect to the server: {message}" in out.stderr


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_exec_with_stdin_and_exit_codes(demo, namespace, tmp_path: Path, version) -> None:
    alice = as_user(demo, "alice", tmp_path, version)
    alice("--context", "dev", "apply", "-f", "-", stdin=pod_manifest("box", namespace))
    alice("--context", "dev", "-n", namespace, "wait", "--for=condition=Ready", "pod/box",
          "--timeout=30s")  # fmt: skip
    ran = alice.run("--context", "dev", "-n", namespace, "exec", "box", "--", "sh", "-c",
                    "echo hi; echo oops >&2; exit 3", check=False)  # fmt: skip
    assert (ran.returncode, ran.stdout, ran.stderr.splitlines()[0]) == (3, "hi\n", "oops")
    piped = alice.run("--context", "dev", "-n", namespace, "exec", "-i", "box", "--", "wc", "-c",
                      stdin="x" * 100_000)  # fmt: skip
    assert piped.stdout.strip() == "100000"
    rows = wait_for(
        lambda: demo.audit(
            "SELECT request_id, recording FROM kubectl_events WHERE user = 'alice' AND "
            "subresource = 'exec' AND namespace = ? AND type = 'KubectlCompleted'",
            [namespace],
        ),
        "the exec sessions in the audit store",
    )
    request_id, recording = rows[0]
    assert recording == f"kg.act.recording.{request_id}"

    def recorded_stdout() -> bytes:
        chunks = demo.audit(
            "SELECT channel, data FROM recording_events WHERE request_id = ? ORDER BY seq",
            [request_id],
        )
        return b"".join(bytes(d) for c, d in chunks if c == 1)

    # eventually consistent: the recording may land over several audit batches
    stdout = wait_for(
        lambda: recorded_stdout() in (b"hi\n", b"100000\n") and recorded_stdout(),
        "the session recording",
    )
    assert stdout in (b"hi\n", b"100000\n")


def test_cp_both_ways(demo: RunningDemo, namespace: str, tmp_path: Path) -> None:
    alice = as_user(demo, "alice", tmp_path)
    alice("--context", "dev", "apply", "-f", "-", stdin=pod_manifest("files", namespace))
    alice("--context", "dev", "-n", namespace, "wait", "--for=condition=Ready", "pod/files",
          "--timeout=30s")  # fmt: skip
    src = tmp_path / "up.bin"
    src.write_bytes(uuid.uuid4().bytes * 20_000)
    alice("--context", "dev", "cp", str(src), f"{namespace}/files:/tmp/up.bin")
    back = tmp_path / "down.bin"
    alice("--context", "dev", "cp", f"{namespace}/files:/tmp/up.bin", str(back))
    assert back.read_bytes() == src.read_bytes()


def test_logs_follow_streams(demo: RunningDemo, namespace: str, tmp_path: Path) -> None:
    admin = as_user(demo, "admin", tmp_path)
    admin("--context", "dev", "-n", namespace, "create", "deployment", "talker",
          "--image=busybox")  # fmt: skip
    admin("--context", "dev", "-n", namespace, "rollout", "status", "deploy/talker",
          "--timeout=60s")  # fmt: skip
    follow = popen(admin, "--context", "dev", "-n", namespace, "logs", "-f", "deploy/talker")
    try:
        lines: list[str] = []

        def read() -> None:
            assert follow.stdout is not None
            for line in follow.stdout:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: len(lines) >= 2, "two log lines through logs -f", deadline=60)
    finally:
        follow.terminate()
        follow.wait(10)


def test_port_forward_carries_bytes_both_ways(demo, namespace, tmp_path: Path) -> None:
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    port = echo.getsockname()[1]

    def serve() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data[::-1])

    threading.Thread(target=serve, daemon=True).start()
    alice = as_user(demo, "alice", tmp_path)
    annotations = {"sim.kubegate.io/port-forward": f"7000=127.0.0.1:{port}"}
    alice("--context", "dev", "apply", "-f", "-", stdin=pod_manifest("fwd", namespace, annotations))
    alice("--context", "dev", "-n", namespace, "wait", "--for=condition=Ready", "pod/fwd",
          "--timeout=30s")  # fmt: skip
    forward = popen(alice, "--context", "dev", "-n", namespace, "port-forward", "pod/fwd", ":7000")
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        local = int(line.split("->")[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", local), timeout=20) as s:
            s.sendall(b"kubegate")
            assert s.recv(100) == b"etagebuk"
    finally:
        forward.terminate()
        forward.wait(10)
        echo.close()


def test_watch_sees_changes_as_they_happen(demo, namespace: str, tmp_path: Path) -> None:
    alice = as_user(demo, "alice", tmp_path)
    watch = popen(alice, "--context", "dev", "-n", namespace, "get", "configmaps", "-w",
                  "--output-watch-events")  # fmt: skip
    seen: list[str] = []
    threading.Thread(
        target=lambda: [seen.append(line) for line in watch.stdout], daemon=True
    ).start()
    try:
        for i in range(5):
            alice("--context", "dev", "-n", namespace, "create", "configmap", f"w{i}")
            time.sleep(1)  # a watch that stays quiet between events must not be cut
        alice("--context", "dev", "-n", namespace, "delete", "configmap", "w0")
        wait_for(lambda: any("DELETED" in s for s in seen), f"the DELETED event in {seen}", 30)
        assert sum("ADDED" in s for s in seen) >= 5
        assert watch.poll() is None, "the watch must still be open"
    finally:
        watch.terminate()
        watch.wait(10)
    # the quiet watch's client left: the edge notices at once, cancels it at the relay
    ended = wait_for(
        lambda: demo.audit(
            "SELECT ended_by FROM kubectl_events WHERE user = 'alice' AND verb = 'watch' "
            "AND namespace = ? AND type = 'KubectlCompleted'",
            [namespace],
        ),
        "the watch's completion in the audit store",
    )
    assert ended == [("client",)]


def test_helm_install_upgrade_uninstall(demo, namespace: str, tmp_path: Path) -> None:
    from tests import tools

    try:
        helm = tools.helm()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    import subprocess

    chart = Path(__file__).resolve().parents[1] / "charts" / "hello"
    env = {"HOME": str(tmp_path), "KUBECONFIG": str(demo.kubeconfig("alice")),
           "HELM_CACHE_HOME": str(tmp_path / "hc"), "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
           "HELM_DATA_HOME": str(tmp_path / "hd"), "PATH": "/usr/bin:/bin"}  # fmt: skip

    def run(*args: str) -> str:
        out = subprocess.run([str(helm), "--kube-context", "dev", "-n", namespace, *args],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    run("install", "hello", str(chart), "--wait", "--timeout", "60s")
    run("upgrade", "hello", str(chart), "--set", "replicaCount=2")
    assert "deployed" in run("status", "hello")
    run("uninstall", "hello")
    cms = cluster_admin(demo, "dev", tmp_path)("-n", namespace, "get", "cm", "-o", "name")
    assert "hello" not in cms


def test_kubeconfig_shape(demo: RunningDemo) -> None:
    config = yaml.safe_load(demo.kubeconfig("admin").read_text())
    assert sorted(c["name"] for c in config["contexts"]) == ["dev", "prod"]
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    assert servers["kubegate-dev"].endswith("/k8s/dev")
