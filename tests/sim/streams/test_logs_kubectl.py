"""kubectl logs: follow until the pod is deleted, tail, timestamps, since, containers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, eventually, pod_manifest, read_until

pytestmark = pytest.mark.e2e

TWO = [{"name": "app", "image": "x"}, {"name": "sidecar", "image": "y"}]


async def _has_lines(apiserver: MiniApiServer, pod: str, container: str, count: int) -> None:
    runtime_pod = next(p for p in apiserver.runtime.pods() if p.name == pod)
    log = runtime_pod.containers[container].log
    await eventually(lambda: len(log.records()) >= count, f"{count} log records of {pod}")


async def test_logs_follow_streams_and_ends_when_the_pod_is_deleted(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("logs-follow"))
    proc = await kubectl.start("logs", "-f", "logs-follow")
    assert proc.stdout is not None
    seen = await read_until(proc.stdout, b"running (2)")
    assert b"sim: container main started" in seen
    apiserver.delete_pod("default", "logs-follow")
    rest = await proc.stdout.read()
    assert await proc.wait() == 0
    lines = (seen + rest).decode().splitlines()
    counts = [int(m.group(1)) for line in lines if (m := re.search(r"running \((\d+)\)", line))]
    assert counts == list(range(1, len(counts) + 1))  # in order, none lost or repeated


async def test_logs_tail_timestamps_since_and_limit(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("logs-opts"))
    await _has_lines(apiserver, "logs-opts", "main", 4)

    code, out, err = await kubectl.run("logs", "--tail=2", "logs-opts")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert "running" in out.splitlines()[-1]

    code, out, _ = await kubectl.run("logs", "--timestamps", "--tail=1", "logs-opts")
    stamp, _, text = out.rstrip("\n").partition(" ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp), out
    assert text.startswith("sim: logs-opts/main running")

    code, out, _ = await kubectl.run("logs", "--since=1h", "logs-opts")
    assert len(out.splitlines()) >= 4
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = await kubectl.run("logs", f"--since-time={future}", "logs-opts")
    assert (code, out) == (0, "")

    code, out, _ = await kubectl.run("logs", "--limit-bytes=7", "logs-opts")
    assert (code, out) == (0, "sim: co")


async def test_logs_of_a_chosen_container_and_the_default_one(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("logs-two", containers=TWO))
    await _has_lines(apiserver, "logs-two", "sidecar", 2)
    code, out, err = await kubectl.run("logs", "logs-two", "-c", "sidecar")
    assert code == 0, err
    assert "logs-two/sidecar running" in out and "/app " not in out

    code, out, err = await kubectl.run("logs", "logs-two")
    assert code == 0, err
    assert 'Defaulted container "app" out of: app, sidecar' in err
    assert "logs-two/app running" in out

    code, out, err = await kubectl.run("logs", "logs-two", "-c", "nope")
    assert code == 1
    assert "container nope is not valid for pod logs-two" in err


async def test_logs_hold_the_main_process_output(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    container = {
        "name": "app",
        "image": "busybox",
        "command": ["sh", "-c"],
        "args": ["echo hello from the app; echo warned >&2; exec sleep 600"],
    }
    apiserver.add_pod(pod_manifest("logs-main", containers=[container]))
    runtime_pod = apiserver.runtime.pods()[0]
    log = runtime_pod.containers["app"].log
    await eventually(
        lambda: {r.text for r in log.records()} >= {b"hello from the app", b"warned"},
        "the main process output in the log",
    )
    streams = {r.text: r.stream for r in log.records()}
    assert streams[b"warned"] == "stderr"
    code, out, err = await kubectl.run("logs", "logs-main")
    assert code == 0, err
    assert "hello from the app\n" in out and "warned\n" in out


async def test_logs_of_a_waiting_container_are_refused(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    pod = pod_manifest("logs-waiting", phase="Pending")
    pod["status"]["containerStatuses"] = [
        {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}
    ]
    apiserver.add_pod(pod)
    code, _, err = await kubectl.run("logs", "logs-waiting")
    assert code == 1
    assert 'container "main" in pod "logs-waiting" is waiting to start: ContainerCreating' in err
