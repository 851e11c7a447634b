"""The pod runtime and what it reads from pod objects, without an API server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ops.sim.runtime import PodRuntime
from ops.sim.streams import podspec
from ops.sim.streams.containers import Isolation, Sandbox
from ops.sim.streams.errors import RuntimeConfigError, StreamStatusError
from ops.sim.streams.pods import ExecRequest
from tests.sim.streams.kube import eventually, pod_manifest

SLEEPER = [{"name": "app", "image": "x", "command": ["sleep", "600"]}]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_close_kills_every_process(runtime: PodRuntime) -> None:
    runtime.pod_added(pod_manifest("sleeper", containers=SLEEPER))
    container = runtime.pods()[0].containers["app"]
    await eventually(lambda: container.main is not None, "the main process")
    assert container.main is not None
    pid = container.main.pid
    assert _alive(pid)
    await runtime.close()
    await eventually(lambda: not _alive(pid), "the main process to be gone")
    with pytest.raises(RuntimeConfigError):
        runtime.pod_added(pod_manifest("late"))


async def test_a_recreated_pod_gets_a_fresh_directory(runtime: PodRuntime) -> None:
    first = pod_manifest("again")
    runtime.pod_added(first)
    old = runtime.pods()[0]
    await eventually(lambda: old.containers["main"].main is not None, "the first main process")
    second = pod_manifest("again")  # same name, new uid
    runtime.pod_added(second)
    new = runtime.pods()[0]
    assert new is not old and new.dir != old.dir
    await eventually(lambda: not old.dir.exists(), "the old pod's directory to be removed")
    assert new.containers["main"].log.path.exists()
    assert b"sim: container main started" in new.containers["main"].log.path.read_bytes()


async def test_removing_an_unknown_pod_is_harmless(runtime: PodRuntime) -> None:
    runtime.pod_removed("default", "never-added")
    assert runtime.pods() == []


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeConfigError):
        PodRuntime(tmp_path, log_interval=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RuntimeConfigError):
        PodRuntime(blocker / "sub")


def test_port_forward_annotation() -> None:
    annotated = pod_manifest(
        "p", annotations={podspec.PORT_FORWARD_ANNOTATION: "8080=127.0.0.1:3000, 53=[::1]:5353"}
    )
    assert podspec.port_map(annotated) == {8080: ("127.0.0.1", 3000), 53: ("::1", 5353)}
    assert podspec.port_map(pod_manifest("p")) == {}
    for bad in ("8080", "8080=127.0.0.1", "x=127.0.0.1:1", "0=127.0.0.1:1", "1=h:70000"):
        pod = pod_manifest("p", annotations={podspec.PORT_FORWARD_ANNOTATION: bad})
        with pytest.raises(RuntimeConfigError):
            podspec.port_map(pod)


def test_container_state_from_statuses_and_phase() -> None:
    running = pod_manifest("p")
    assert podspec.container_state(running, "main").state == "running"
    waiting = pod_manifest("p", phase="Pending")
    assert podspec.container_state(waiting, "main") == podspec.ContainerState(
        "waiting", "ContainerCreating"
    )
    done = pod_manifest("p", phase="Succeeded")
    assert podspec.container_state(done, "main").state == "terminated"
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    assert podspec.container_state(bare, "c").state == "running"  # stored as submitted


def test_choose_container() -> None:
    pod = pod_manifest("p", containers=[{"name": "a"}, {"name": "b"}])
    pod["spec"]["initContainers"] = [{"name": "init"}]
    assert podspec.choose_container(pod, "b") == "b"
    assert podspec.choose_container(pod, "init") == "init"
    with pytest.raises(StreamStatusError, match=r"choose one of: \[init a b\]"):
        podspec.choose_container(pod, "")
    assert podspec.choose_container(pod_manifest("q"), "") == "main"


def test_container_paths_map_into_the_root(tmp_path: Path) -> None:
    sandbox = Sandbox.detect()
    root = tmp_path / "root"
    sandbox.prepare_root(root)
    assert sandbox.host_path(root, "/tmp/x") == root / "tmp" / "x"
    assert sandbox.host_path(root, "relative/y") == root / "relative" / "y"
    assert sandbox.resolve(root, "sh", "/usr/bin:/bin") in ("/usr/bin/sh", "/bin/sh")
    assert sandbox.resolve(root, "no-such-program", "/usr/bin:/bin") is None
    assert (root / "tmp").stat().st_mode & 0o1777 == 0o1777
    if sandbox.isolation is Isolation.NAMESPACES:
        assert sandbox.host_path(root, "/usr/bin/sh") == Path("/usr/bin/sh")  # read-only bind


async def test_processes_run_without_namespaces_too(tmp_path: Path) -> None:
    runtime = PodRuntime(tmp_path / "pods", isolation="none")
    try:
        assert runtime.sandbox.isolation is Isolation.NONE
        runtime.pod_added(pod_manifest("plain"))
        container = runtime.pods()[0].containers["main"]
        process = await container.exec(ExecRequest(("sh", "-c", "pwd; echo $HOSTNAME; exit 3")))
        out = b""
        while chunk := await process.read_stdout():
            out += chunk
        assert await asyncio.wait_for(process.wait(), 30) == 3
        assert out.decode().split() == [str(container.root), "plain"]
    finally:
        await runtime.close()
