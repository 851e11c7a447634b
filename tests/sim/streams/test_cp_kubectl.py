"""kubectl cp both ways: kubectl runs tar in the container, paths land in the pod's root."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, pod_manifest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("env", [{}, {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}])
async def test_cp_into_and_out_of_the_pod(
    apiserver: MiniApiServer, kubectl: Kubectl, tmp_path: Path, env: dict[str, str]
) -> None:
    apiserver.add_pod(pod_manifest("cp-pod"))
    if apiserver.runtime.sandbox.isolation.value != "namespaces":
        pytest.skip("no mount namespaces on this machine: absolute paths are not confined")
    name = f"kubegate-cp-{uuid.uuid4().hex}"
    payload = os.urandom(300_000)
    local = tmp_path / "upload.bin"
    local.write_bytes(payload)

    code, _, err = await kubectl.run("cp", str(local), f"cp-pod:/tmp/{name}", **env)
    assert code == 0, err
    root = apiserver.runtime.pods()[0].containers["main"].root
    assert (root / "tmp" / name).read_bytes() == payload
    assert not await asyncio.to_thread(os.path.exists, f"/tmp/{name}")  # stayed in the pod

    back = tmp_path / "download.bin"
    code, _, err = await kubectl.run("cp", f"cp-pod:/tmp/{name}", str(back), **env)
    assert code == 0, err
    assert back.read_bytes() == payload


async def test_cp_a_directory_out_of_the_pod(
    apiserver: MiniApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    apiserver.add_pod(pod_manifest("cp-dir"))
    code, _, err = await kubectl.run(
        "exec",
        "cp-dir",
        "--",
        "sh",
        "-c",
        "mkdir -p data/sub && echo a > data/a && echo b > data/sub/b",
    )
    assert code == 0, err
    code, _, err = await kubectl.run("cp", "cp-dir:data", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "a").read_text() == "a\n"
    assert (tmp_path / "out" / "sub" / "b").read_text() == "b\n"
