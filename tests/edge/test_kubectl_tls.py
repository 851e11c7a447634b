"""The edge's TLS for kubectl: which suites it offers and who chooses, with a real TLS client
(`openssl s_client`) against the edge's own context."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from edge.http1 import Http1Server, Request, Response
from edge.service import kubectl_ssl_context
from tests.edge.conftest import Pki

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl CLI")


async def _handshake(pki: Pki, *args: str) -> tuple[int, str]:
    """Run `openssl s_client` with `args` against an edge listener; (exit code, its output)."""
    pki.server_context()  # writes server.crt / server.key
    ctx = kubectl_ssl_context(pki.ca_path, pki.dir / "server.crt", pki.dir / "server.key")

    async def handler(req: Request, resp: Response) -> None:
        await resp.send(200, b"{}")

    server = Http1Server(handler, ssl_context=ctx)
    port = await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-brief",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode(errors="replace")
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [
        ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"),
        ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
        ("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
    ],
)
async def test_the_client_order_picks_the_tls13_suite(pki: Pki, offer: str, chosen: str) -> None:
    """kubectl offers AES-128-GCM first (ChaCha20 first without AES hardware): the edge takes
    the client's first choice, as a kube-apiserver does, not Python's AES-256-GCM."""
    code, out = await _handshake(pki, "-tls1_3", "-ciphersuites", offer)
    assert code == 0, out
    assert f"Ciphersuite: {chosen}" in out, out


async def test_tls12_takes_an_aead_suite(pki: Pki) -> None:
    code, out = await _handshake(
        pki, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"
    )
    assert code == 0, out
    assert "Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256" in out, out


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA"])
async def test_tls12_without_an_aead_is_refused(pki: Pki, suite: str) -> None:
    code, out = await _handshake(pki, "-tls1_2", "-cipher", suite)
    assert code != 0
    assert "handshake failure" in out or "no shared cipher" in out, out


async def test_tls11_is_refused(pki: Pki) -> None:
    code, out = await _handshake(pki, "-tls1_1", "-cipher", "ALL:@SECLEVEL=0")
    assert code != 0
    assert "Ciphersuite:" not in out, out
