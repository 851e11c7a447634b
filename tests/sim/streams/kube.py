"""A minimal kube-apiserver front for the streaming tests: TLS, discovery, pod GET, subresources.

Just enough for real kubectl to find a pod and open its log/exec/attach/portforward endpoints,
so these tests do not depend on the simulator core. It routes the subresources to
`ops.sim.streams.handle` exactly as the core's router does (after its own checks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import ipaddress
import json
import os
import socket
import ssl
import struct
import termios
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ops.sim import streams
from ops.sim.runtime import PodRuntime


@dataclass(frozen=True)
class Tls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def generate(cls) -> Tls:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sim-stream test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cls(
            ca.public_bytes(serialization.Encoding.PEM),
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def server_context(self, directory: Path) -> ssl.SSLContext:
        cert, key = directory / "server.crt", directory / "server.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def _discovery_routes(app: web.Application) -> None:
    async def api(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
                ],
            }
        )

    async def api_v1(_: web.Request) -> web.Response:
        resource = {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "list"],
            "shortNames": ["po"],
        }
        subresources = [
            {"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind,
             "verbs": verbs}
            for sub, kind, verbs in (
                ("log", "Pod", ["get"]),
                ("exec", "PodExecOptions", ["create", "get"]),
                ("attach", "PodAttachOptions", ["create", "get"]),
                ("portforward", "PodPortForwardOptions", ["create", "get"]),
            )
        ]  # fmt: skip
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "v1",
                "resources": [resource, *subresources],
            }
        )

    async def apis(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def version(_: web.Request) -> web.Response:
        return web.json_response(
            {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
        )

    app.router.add_get("/api", api)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get("/apis", apis)
    app.router.add_get("/version", version)


def pod_manifest(
    name: str,
    *,
    namespace: str = "default",
    containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    node: str | None = "sim-node",
) -> dict[str, Any]:
    """A pod as the simulator would store it once 'scheduled' and running."""
    containers = containers or [{"name": "main", "image": "busybox"}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "creationTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": annotations or {},
        },
        "spec": {"containers": containers},
        "status": {"phase": phase},
    }
    if node:
        pod["spec"]["nodeName"] = node
    if phase == "Running":
        pod["status"]["containerStatuses"] = [
            {"name": c["name"], "ready": True, "restartCount": 0, "state": {"running": {}}}
            for c in containers
        ]
    return pod


@dataclass
class MiniApiServer:
    """Serves pods from `pods` over TLS; `runtime` runs their streaming subresources."""

    runtime: PodRuntime
    tls: Tls
    workdir: Path
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.pods[key] = pod
        self.runtime.pod_added(pod)
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        self.pods.pop((namespace, name), None)
        self.runtime.pod_removed(namespace, name)

    async def start(self) -> None:
        app = web.Application()
        _discovery_routes(app)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self._get_pod)
        path = "/api/v1/namespaces/{ns}/pods/{name}/{sub}"
        app.router.add_route("GET", path, self._subresource)
        app.router.add_route("POST", path, self._subresource)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=self.tls.server_context(self.workdir))
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _not_found(self, name: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'pods "{name}" not found',
            "reason": "NotFound",
            "details": {"name": name, "kind": "pods"},
            "code": 404,
        }
        return web.json_response(body, status=404)

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return self._not_found(request.match_info["name"])
        return web.json_response(pod)

    async def _subresource(self, request: web.Request) -> web.StreamResponse:
        sub = request.match_info["sub"]
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if sub not in streams.SUBRESOURCES:
            raise web.HTTPNotFound()
        if pod is None:
            return self._not_found(request.match_info["name"])
        return await streams.handle(request, sub, pod, self.runtime)

    def kubeconfig(self) -> Path:
        path = self.workdir / "kubeconfig"
        ca = self.workdir / "ca.crt"
        ca.write_bytes(self.tls.ca_pem)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sim", "cluster": {"server": self.url, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": "tester", "user": {"token": "sim-stream-test-token"}}],
            "contexts": [
                {
                    "name": "sim",
                    "context": {"cluster": "sim", "user": "tester", "namespace": "default"},
                }
            ],
            "current-context": "sim",
        }
        path.write_text(json.dumps(config))
        return path


@dataclass
class Kubectl:
    """Runs the real kubectl against a `MiniApiServer`."""

    kubeconfig: Path
    home: Path
    binary: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
        }
        env.update(extra)
        return env

    async def run(
        self, *args: str, stdin: bytes | None = None, seconds: float = 60, **env: str
    ) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(**env),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), seconds)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            raise AssertionError(
                f"kubectl {' '.join(args)} did not finish in {seconds}s; "
                f"stdout={out.decode(errors='replace')!r} stderr={err.decode(errors='replace')!r}"
            ) from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(**env),
        )


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, seconds: float = 30.0
) -> None:
    """Poll `check` until it holds; fail with `what` at the deadline (not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def read_until(stream: asyncio.StreamReader, needle: bytes, seconds: float = 30.0) -> bytes:
    """Read from `stream` until `needle` shows up; fail with what was read at the deadline."""
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} never came; got {seen!r}")
        try:
            chunk = await asyncio.wait_for(stream.read(4096), remaining)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"stream ended before {needle!r}; got {seen!r}")
        seen += chunk
    return seen


class PtyDriver:
    """Runs a program on a pseudo-terminal of a given size, as a person at a terminal would."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.output = b""

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str], rows: int, cols: int) -> PtyDriver:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    async def expect(self, needle: bytes, seconds: float = 30.0) -> bytes:
        """Read until `needle` is in the output; returns all output so far."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        while needle not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never came; got {self.output!r}")
            ready = loop.create_future()
            loop.add_reader(self.master, ready.set_result, None)
            try:
                await asyncio.wait_for(ready, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                continue
            finally:
                loop.remove_reader(self.master)
            try:
                self.output += os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:  # EIO: the program closed the terminal
                raise AssertionError(
                    f"terminal closed before {needle!r}; got {self.output!r}"
                ) from exc
        return self.output

    async def wait(self, seconds: float = 30.0) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), seconds)
        finally:
            os.close(self.master)
