"""kubectl exec against the simulator: output, exit codes, stdin, tty, both transports."""

from __future__ import annotations

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, pod_manifest

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
