"""The streaming subresources behind the full simulator (its router, RBAC and pod controller),
driven by kubectl 1.32 and 1.33: logs -f, port-forward both ways, cp, attach."""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sim.conftest import Kubectl, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _needs_runtime(sim: Any) -> None:
    if getattr(sim, "runtime", None) is None:
        pytest.skip("this simulator build has no pod runtime")


def _pod(
    kubectl: Kubectl, ns: str, name: str, container: dict[str, Any], **annotations: str
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"containers": [{"image": "busybox", **container}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    kubectl("-n", ns, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s")


@pytest.fixture
def ns(any_kubectl: Kubectl, ns_name: str) -> str:
    any_kubectl("create", "namespace", ns_name)
    return ns_name


def _read_until(proc: subprocess.Popen[str], pattern: str) -> str:
    """Lines of a running kubectl until one matches (kubectl is killed by the caller on failure)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"kubectl ended before {pattern!r}: {''.join(seen)!r}")


def test_logs_follow_a_counting_container_until_it_is_deleted(
    any_kubectl: Kubectl, ns: str
) -> None:
    counter = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"
    _pod(any_kubectl, ns, "counter", {"name": "count", "command": ["sh", "-c", counter]})
    proc = any_kubectl.popen("-n", ns, "logs", "-f", "counter")
    try:
        seen = _read_until(proc, r"^line 3$")
        any_kubectl("-n", ns, "delete", "pod", "counter", "--wait=false")
        proc.wait(timeout=30)  # not communicate(): it would skip what the line reader buffered
        assert proc.stdout is not None
        rest = proc.stdout.read()
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    numbers = [int(n) for n in re.findall(r"^line (\d+)$", seen + rest, re.M)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # nothing lost


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello\n")
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        greeting = b""
        while len(greeting) < 6:
            greeting += conn.recv(6 - len(greeting))
        assert greeting == b"hello\n"
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "connection closed early"
            got += chunk
        return got


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_port_forward_through_the_simulator(
    any_kubectl: Kubectl, ns: str, echo_port: int, websockets: str
) -> None:
    _pod(any_kubectl, ns, "web", {"name": "web"},
         **{"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{echo_port}"})  # fmt: skip
    any_kubectl.env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = websockets
    proc = any_kubectl.popen("-n", ns, "port-forward", "pod/web", ":8080")
    try:
        line = _read_until(proc, r"Forwarding from 127\.0\.0\.1:\d+ -> 8080")
        local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
        payload = os.urandom(500_000)
        assert _exchange(local, payload) == payload
        assert _exchange(local, b"second connection") == b"second connection"
    finally:
        proc.terminate()
        proc.wait(30)


def test_cp_and_attach_through_the_simulator(any_kubectl: Kubectl, ns: str, tmp_path: Path) -> None:
    _pod(any_kubectl, ns, "shell", {"name": "sh", "stdin": True, "stdinOnce": True})
    local = tmp_path / "in.txt"
    local.write_text("round trip\n")
    any_kubectl("-n", ns, "cp", str(local), "shell:/tmp/in.txt")
    any_kubectl("-n", ns, "cp", "shell:/tmp/in.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "round trip\n"

    result = any_kubectl.run("-n", ns, "attach", "-i", "shell", stdin="cat /tmp/in.txt\n")
    assert "round trip" in result.stdout
    wait_for(
        lambda: "round trip" in any_kubectl("-n", ns, "logs", "shell"),
        "the attached shell's output in the pod log",
    )
