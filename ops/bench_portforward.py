"""Port-forward throughput: bytes through a real `kubectl port-forward`, either way.

The simulated pod's container port maps to a TCP server this process runs (annotation
`sim.kubegate.io/port-forward`). Upload: the client sends N bytes, half-closes, and the server
answers with the count it received. Download: the client asks for N bytes, the server sends
them and closes, and the client counts them. Either figure covers every byte end to end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from domain.errors import KubegateError
from ops.bench_cpu import process_cpu_s


def kubectl_binary() -> str:
    found = os.environ.get("KUBEGATE_KUBECTL") or shutil.which("kubectl")
    if not found:
        raise KubegateError("kubectl not found: set KUBEGATE_KUBECTL or put kubectl on PATH")
    return found


BLOCK = b"\0" * (1 << 16)


async def _write_bytes(writer: asyncio.StreamWriter, count: int) -> None:
    """`count` zero bytes, in 64 KiB writes."""
    sent = 0
    while sent < count:
        piece = BLOCK[: count - sent]
        writer.write(piece)
        sent += len(piece)
        await writer.drain()


async def _sink() -> tuple[asyncio.Server, int]:
    """The pod's port: `up` counts what follows until EOF and answers the count; `down N`
    sends N bytes and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ask = (await reader.readline()).split()
        if ask[:1] == [b"down"] and len(ask) == 2:
            await _write_bytes(writer, int(ask[1]))
            writer.close()
            return
        total = await _count_until_eof(reader)
        writer.write(f"{total}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _kubectl(kubeconfig: Path, context: str | None, *args: str) -> list[str]:
    cmd = [kubectl_binary(), "--kubeconfig", str(kubeconfig)]
    if context:
        cmd += ["--context", context]
    return cmd + list(args)


@dataclass(frozen=True)
class PortForwardRun:
    mb_s: float
    """Bytes per second (in MB) from the first byte sent to the sink's count back."""
    kubectl_cpu_s: float
    """CPU the `kubectl port-forward` process used, start-up included."""


async def port_forward_rate(
    kubeconfig: Path, context: str | None, megabytes: int, workdir: Path, *, download: bool = False
) -> PortForwardRun:
    """MB/s of `megabytes` through `kubectl port-forward` to a fresh pod: sent by this process
    (upload) or, with `download`, sent by the pod's side and read here."""
    os.makedirs(workdir, exist_ok=True)
    server, sink_port = await _sink()
    pod = f"pf-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": "bench",
            "annotations": {"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{sink_port}"},
        },
        "spec": {"containers": [{"name": "sink", "image": "sink"}]},
    }
    env = {**os.environ, "HOME": str(workdir), "KUBECACHEDIR": str(workdir / "cache")}
    made = await asyncio.to_thread(
        subprocess.run,
        _kubectl(kubeconfig, context, "apply", "-f", "-"),
        input=yaml.safe_dump(manifest),
        text=True,
        capture_output=True,
        env=env,
    )
    if made.returncode != 0:
        raise KubegateError(f"creating the port-forward pod failed: {made.stderr.strip()}")
    await asyncio.to_thread(
        subprocess.run,
        _kubectl(
            kubeconfig,
            context,
            "wait",
            "-n",
            "bench",
            "--for=condition=Ready",
            f"pod/{pod}",
            "--timeout=60s",
        ),
        capture_output=True,
        env=env,
    )
    forward = await asyncio.create_subprocess_exec(
        *_kubectl(kubeconfig, context, "port-forward", "-n", "bench", f"pod/{pod}", ":8080"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        assert forward.stdout is not None
        line = (await asyncio.wait_for(forward.stdout.readline(), 60)).decode()
        if "Forwarding from" not in line:
            raise KubegateError(f"kubectl port-forward did not start: {line.strip()}")
        local_port = int(line.split("->")[0].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        target = megabytes * 1_000_000
        if download:
            writer.write(f"down {target}\n".encode())
            started = time.perf_counter()
            got = await asyncio.wait_for(_count_until_eof(reader), 300)
            took = time.perf_counter() - started
            writer.close()
            if got != target:
                raise KubegateError(f"port-forward lost bytes: the pod sent {target}, got {got}")
            return PortForwardRun(got / took / 1e6, process_cpu_s(forward.pid))
        writer.write(b"up\n")
        started = time.perf_counter()
        await _write_bytes(writer, target)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.readline(), 300)
        took = time.perf_counter() - started
        writer.close()
        if int(answer or b"0") != target:
            raise KubegateError(f"port-forward lost bytes: sent {target}, sink got {answer!r}")
        return PortForwardRun(target / took / 1e6, process_cpu_s(forward.pid))
    finally:
        forward.terminate()
        await forward.wait()
        server.close()


async def _count_until_eof(reader: asyncio.StreamReader) -> int:
    total = 0
    while chunk := await reader.read(1 << 18):
        total += len(chunk)
    return total
