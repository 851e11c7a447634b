"""kubectl attach: the container's main process stdio, with and without a terminal."""

from __future__ import annotations

import contextlib

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, PtyDriver, eventually, pod_manifest

pytestmark = pytest.mark.e2e

TRANSPORTS = {
    "websocket": {},
    "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"},
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_attach_feeds_the_main_shell_and_ends_with_it(
    apiserver: MiniApiServer, kubectl: Kubectl, transport: str
) -> None:
    shell = {"name": "shell", "image": "busybox", "stdin": True, "stdinOnce": True}
    apiserver.add_pod(pod_manifest("attach-shell", containers=[shell]))
    code, out, err = await kubectl.run(
        "attach", "-i", "attach-shell", stdin=b"echo attached-$((40+2))\n",
        **TRANSPORTS[transport],
    )  # fmt: skip
    assert code == 0, err
    assert "attached-42" in out
    log = apiserver.runtime.pods()[0].containers["shell"].log
    assert b"attached-42" in {r.text for r in log.records()}  # attach output is the pod's log


async def test_attach_tty_to_an_interactive_container(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    shell = {"name": "shell", "image": "busybox", "stdin": True, "tty": True}
    apiserver.add_pod(pod_manifest("attach-tty", containers=[shell]))
    runtime_pod = apiserver.runtime.pods()[0]
    await eventually(lambda: runtime_pod.containers["shell"].main is not None, "the main shell")
    driver = await PtyDriver.start(
        [kubectl.binary, "attach", "-it", "attach-tty"], kubectl.env(), rows=20, cols=70
    )
    await driver.expect(b"If you don't see a command prompt")
    driver.send(b"stty size; echo $((7*6))x\r")
    await driver.expect(b"42x")
    # kubectl attach nudges the size (+1 row and column, then the real size) to force a
    # redraw, as against a real cluster; ask again until the real size has arrived.
    for _ in range(50):
        if b"20 70" in driver.output:
            break
        driver.send(b"stty size\r")
        with contextlib.suppress(AssertionError):
            await driver.expect(b"20 70", seconds=0.2)
    assert b"20 70" in driver.output
    driver.send(b"exit\r")
    assert await driver.wait() == 0
