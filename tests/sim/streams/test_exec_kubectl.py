"""kubectl exec against the simulator: output, exit codes, stdin, tty, both transports."""

from __future__ import annotations

import asyncio

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, PtyDriver, eventually, pod_manifest

pytestmark = pytest.mark.e2e

TRANSPORTS = {
    "websocket": {},
    "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"},
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exec_prints_output_and_exits_with_the_command_code(
    apiserver: MiniApiServer, kubectl: Kubectl, transport: str
) -> None:
    apiserver.add_pod(pod_manifest("exec-code"))
    code, out, err = await kubectl.run(
        "exec", "exec-code", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3",
        **TRANSPORTS[transport],
    )  # fmt: skip
    assert (code, out) == (3, "hi\n"), err
    assert "oops" in err
    assert "command terminated with exit code 3" in err
    counter = apiserver.runtime.metrics.sessions.labels("exec", transport)._value.get()
    assert counter == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exec_with_piped_stdin_sees_eof(
    apiserver: MiniApiServer, kubectl: Kubectl, transport: str
) -> None:
    apiserver.add_pod(pod_manifest("exec-stdin"))
    data = b"".join(b"line %d\n" % i for i in range(5000))
    code, out, err = await kubectl.run(
        "exec", "-i", "exec-stdin", "--", "sh", "-c", "wc -l; echo done",
        stdin=data, **TRANSPORTS[transport],
    )  # fmt: skip
    assert code == 0, err
    assert out.split() == ["5000", "done"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exec_tty_runs_on_a_terminal_of_the_clients_size(
    apiserver: MiniApiServer, kubectl: Kubectl, transport: str
) -> None:
    apiserver.add_pod(pod_manifest("exec-tty"))
    argv = [kubectl.binary, "exec", "-it", "exec-tty", "--", "sh"]
    driver = await PtyDriver.start(argv, kubectl.env(**TRANSPORTS[transport]), rows=33, cols=101)
    await driver.expect(b"# ")
    driver.send(b"tty; echo $((6*7))\r")
    await driver.expect(b"42")
    driver.send(b"stty size\r")
    await driver.expect(b"33 101")
    driver.send(b"exit 5\r")
    assert await driver.wait() == 5
    assert b"/dev/pts/" in driver.output


async def test_exec_of_a_missing_program_is_an_internal_error(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("exec-missing"))
    code, out, err = await kubectl.run("exec", "exec-missing", "--", "no-such-program")
    assert code == 1
    assert out == ""
    assert 'exec: "no-such-program": executable file not found in $PATH' in err
    assert "Internal error occurred" in err


async def test_exec_sees_the_pods_own_filesystem_and_hostname(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("exec-view"))
    code, out, err = await kubectl.run(
        "exec", "exec-view", "--", "sh", "-c",
        "hostname; echo data > /tmp/marker; touch /etc/nope 2>/dev/null || echo ro",
    )  # fmt: skip
    assert code == 0, err
    root = apiserver.runtime.pods()[0].containers["main"].root
    if apiserver.runtime.sandbox.isolation.value != "namespaces":
        pytest.skip("no mount namespaces on this machine: paths are not confined")
    assert out.split() == ["exec-view", "ro"]
    assert (root / "tmp" / "marker").read_text() == "data\n"


async def test_exec_falls_back_to_spdy_when_websocket_v5_is_refused(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.runtime.websockets = False  # like a v1.29 API server
    apiserver.add_pod(pod_manifest("exec-fallback"))
    code, out, err = await kubectl.run("exec", "exec-fallback", "--", "echo", "via-fallback")
    assert (code, out) == (0, "via-fallback\n"), err
    metrics = apiserver.runtime.metrics.sessions
    assert metrics.labels("exec", "spdy")._value.get() == 1
    assert metrics.labels("exec", "websocket")._value.get() == 0


async def test_exec_into_a_pod_whose_container_waits(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    pod = pod_manifest("exec-waiting", phase="Pending")
    pod["status"]["containerStatuses"] = [
        {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}
    ]
    apiserver.add_pod(pod)
    code, _, err = await kubectl.run("exec", "exec-waiting", "--", "true")
    assert code == 1
    assert 'container not found ("main")' in err


async def test_deleting_the_pod_kills_an_exec_with_137(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    apiserver.add_pod(pod_manifest("exec-killed"))
    proc = await kubectl.start("exec", "exec-killed", "--", "sleep", "600")
    container = apiserver.runtime.pods()[0].containers["main"]
    await eventually(lambda: len(container.execs) == 1, "the exec'd sleep")
    apiserver.delete_pod("default", "exec-killed")
    assert await asyncio.wait_for(proc.wait(), 30) == 137
    assert proc.stderr is not None
    assert b"command terminated with exit code 137" in await proc.stderr.read()
