"""Data-plane benchmarks: the real processes, measured from a client's side.

`latency` and `stream` start the deployment shape of production on this machine: `kubegate up`
(control plane: NATS, admin API, the DuckDB audit store), an edge as its own process (`kubegate
edge`, as operators run them behind a load balancer), `kubegate sim` (the cluster's API server)
and `kubegate relay` (inside the "cluster"), then measure the same requests sent directly to the
API server and through edge + NATS + relay. The audit of each proxied request still happens: the
control plane stores it while the benchmark runs. `revocation` lives in `ops.bench_revocation`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from broker.server import free_port
from ops.bench.floor_path import FloorPath, floor_path
from ops.bench.processes import spawn, stop, wait_file
from ops.bench_cpu import CpuMeter, child_pids
from ops.client import AdminClient
from ops.config import AdminConfig

CLUSTER = "bench"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _kubegate(*args: str, log: Path) -> subprocess.Popen[bytes]:
    return spawn("ops.cli", *args, log=log)


@dataclass
class Topology:
    """The running processes and how to reach the cluster directly and through kubegate."""

    base: Path
    up: subprocess.Popen[bytes]
    sim: subprocess.Popen[bytes]
    relay: subprocess.Popen[bytes]
    edge_pid: int
    direct_url: str
    direct_token: str
    direct_ssl: ssl.SSLContext
    proxy_url: str
    proxy_ssl: ssl.SSLContext
    user_kubeconfig: Path
    sim_kubeconfig: Path

    def cpu_meter(self) -> CpuMeter:
        """A meter over every process a proxied byte crosses (the client is added by it)."""
        nats = child_pids(self.up.pid, "nats-server")
        pids = {"edge": self.edge_pid, "relay": self.relay.pid, "sim": self.sim.pid}
        pids["control_plane"] = self.up.pid
        if nats:
            pids["nats"] = nats[0]
        return CpuMeter(pids)


@contextlib.asynccontextmanager
async def topology(base: Path) -> AsyncIterator[Topology]:
    """Start up + sim + relay as processes; a user `bench` with cluster-admin on `bench`."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        progress("starting kubegate up (control plane + edge)")
        cp = base / "cp"
        up = _kubegate(
            "up",
            "--data-dir",
            str(cp),
            "--edge-port",
            "0",
            "--admin-port",
            "0",
            "--log-level",
            "warning",
            log=base / "up.log",
        )
        procs.append(up)
        await wait_file(cp / "ready.json", up, "kubegate up")
        ready = json.loads((cp / "ready.json").read_text())
        admin = AdminClient(AdminConfig.load(cp / "admin.conf"))
        await asyncio.to_thread(admin.post, "/v1/clusters", {"name": CLUSTER})
        await asyncio.to_thread(admin.post, "/v1/users", {"name": "bench"})
        await asyncio.to_thread(
            admin.post,
            "/v1/grants",
            {
                "subject_kind": "user",
                "subject": "bench",
                "role": "cluster-admin",
                "clusters": [CLUSTER],
            },
        )
        creds = await asyncio.to_thread(admin.post, f"/v1/clusters/{CLUSTER}/relay-credentials")
        creds_file = base / "relay.creds"
        creds_file.write_text(json.dumps(creds))
        kc = await asyncio.to_thread(
            admin.post, "/v1/kubeconfigs", {"user": "bench", "clusters": [CLUSTER]}
        )
        user_kubeconfig = base / "bench.kubeconfig"
        user_kubeconfig.write_text(kc["kubeconfig"])

        progress("starting an edge (`kubegate edge`)")
        edge_port = free_port("127.0.0.1")
        edge = _kubegate(
            "edge",
            "--nats",
            ready["nats_url"],
            "--nats-creds",
            str(cp / "creds" / "edge.json"),
            "--pki",
            str(cp / "pki"),
            "--port",
            str(edge_port),
            "--log-level",
            "warning",
            log=base / "edge.log",
        )
        procs.append(edge)
        kc["kubeconfig"] = _through_edge(kc["kubeconfig"], edge_port)
        user_kubeconfig.write_text(kc["kubeconfig"])

        progress("starting the simulated cluster and its relay")
        simdir = base / "sim"
        sim = _kubegate("sim", "--dir", str(simdir), "--name", CLUSTER, log=base / "sim.log")
        procs.append(sim)
        await wait_file(simdir / "admin.kubeconfig", sim, "kubegate sim")
        await asyncio.sleep(0.5)
        relay = _kubegate(
            "relay",
            "--cluster",
            CLUSTER,
            "--nats",
            ready["nats_url"],
            "--creds",
            str(creds_file),
            "--kubeconfig",
            str(simdir / "admin.kubeconfig"),
            log=base / "relay.log",
        )
        procs.append(relay)

        sim_cfg = yaml.safe_load((simdir / "admin.kubeconfig").read_text())
        direct_url = sim_cfg["clusters"][0]["cluster"]["server"]
        direct_token = sim_cfg["users"][0]["user"]["token"]
        direct_ssl = ssl.create_default_context(cafile=str(simdir / "ca.crt"))
        user_cfg = yaml.safe_load(kc["kubeconfig"])
        proxy_url = user_cfg["clusters"][0]["cluster"]["server"]
        proxy_ssl = ssl.create_default_context(cafile=str(cp / "pki" / "ca.crt"))
        cert, key = base / "bench.crt", base / "bench.key"
        import base64

        cert.write_bytes(base64.b64decode(user_cfg["users"][0]["user"]["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user_cfg["users"][0]["user"]["client-key-data"]))
        proxy_ssl.load_cert_chain(cert, key)
        top = Topology(
            base,
            up,
            sim,
            relay,
            edge.pid,
            direct_url,
            direct_token,
            direct_ssl,
            proxy_url,
            proxy_ssl,
            user_kubeconfig,
            simdir / "admin.kubeconfig",
        )
        await _wait_proxy(top)
        yield top
    finally:
        stop(procs, 15)


def _through_edge(kubeconfig: str, port: int) -> str:
    """`kubeconfig` with every cluster's server moved to the edge listening on `port`."""
    cfg = yaml.safe_load(kubeconfig)
    for entry in cfg["clusters"]:
        url = urllib.parse.urlsplit(entry["cluster"]["server"])
        entry["cluster"]["server"] = url._replace(netloc=f"{url.hostname}:{port}").geturl()
    return yaml.safe_dump(cfg)


async def _wait_proxy(top: Topology) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(
                    f"{top.proxy_url}/api/v1/namespaces/default", ssl=top.proxy_ssl
                ) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy never answered 200 (see relay.log, up.log)")
            await asyncio.sleep(0.2)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _timed_gets(session: aiohttp.ClientSession, url: str, n: int, **kw: Any) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url, **kw) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {url} answered {r.status}")
        out.append((time.perf_counter() - started) * 1000.0)
    return out


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubegate-bench-") as tmp:
        async with topology(Path(tmp)) as top:
            path = "/api/v1/namespaces/default"
            direct: list[float] = []
            proxied: list[float] = []
            conn_d = aiohttp.TCPConnector(ssl=top.direct_ssl, limit=1)
            conn_p = aiohttp.TCPConnector(ssl=top.proxy_ssl, limit=1)
            async with (
                aiohttp.ClientSession(
                    connector=conn_d, headers={"Authorization": f"Bearer {top.direct_token}"}
                ) as ds,
                aiohttp.ClientSession(connector=conn_p) as ps,
            ):
                progress("warming up")
                await _timed_gets(ds, top.direct_url + path, 100)
                await _timed_gets(ps, top.proxy_url + path, 100)
                rounds = 5
                per = max(args.requests // rounds, 1)
                for i in range(rounds):
                    progress(f"round {i + 1}/{rounds}: {per} direct, {per} proxied GETs")
                    direct += await _timed_gets(ds, top.direct_url + path, per)
                    proxied += await _timed_gets(ps, top.proxy_url + path, per)
    result = {
        "requests": len(direct),
        "direct_p50_ms": round(statistics.median(direct), 3),
        "direct_p99_ms": round(_percentile(direct, 0.99), 3),
        "proxy_p50_ms": round(statistics.median(proxied), 3),
        "proxy_p99_ms": round(_percentile(proxied, 0.99), 3),
    }
    result["added_p50_ms"] = round(result["proxy_p50_ms"] - result["direct_p50_ms"], 3)
    result["added_p99_ms"] = round(result["proxy_p99_ms"] - result["direct_p99_ms"], 3)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


# --- streaming ----------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """Samples a process's resident memory every 50 ms; remembers the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = _rss_kib(pid)
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_kib(self.pid))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssWatch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1024.0


async def _fill_configmaps(top: Topology, count: int, size: int) -> None:
    """`count` configmaps of about `size` bytes each, created directly on the API server."""
    headers = {"Authorization": f"Bearer {top.direct_token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        url = f"{top.direct_url}/api/v1/namespaces"
        async with s.post(url, json={"metadata": {"name": "bench"}}, ssl=top.direct_ssl):
            pass
        sem = asyncio.Semaphore(16)
        payload = "x" * size

        async def one(i: int) -> None:
            async with (
                sem,
                s.post(
                    f"{url}/bench/configmaps",
                    json={"metadata": {"name": f"cm-{i}"}, "data": {"blob": payload}},
                    ssl=top.direct_ssl,
                ) as r,
            ):
                if r.status not in (201, 409):
                    raise RuntimeError(f"creating configmap: {r.status}")

        await asyncio.gather(*(one(i) for i in range(count)))


async def _download(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    async with session.get(url, **kw) as r:
        if r.status != 200:
            raise RuntimeError(f"GET {url} answered {r.status}")
        async for chunk in r.content.iter_chunked(1 << 16):
            total += len(chunk)
    return total, time.perf_counter() - started


async def stream(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kubegate-bench-") as tmp:
        async with topology(Path(tmp)) as top:
            progress(f"creating {args.objects} configmaps of {args.object_kib} KiB")
            await _fill_configmaps(top, args.objects, args.object_kib * 1024)
            path = "/api/v1/namespaces/bench/configmaps"
            headers = {"Authorization": f"Bearer {top.direct_token}"}
            async with (
                aiohttp.ClientSession(headers=headers) as ds,
                aiohttp.ClientSession() as ps,
            ):
                d_rates, p_rates = [], []
                d_cpu, p_cpu = top.cpu_meter(), top.cpu_meter()
                size = 0
                for i in range(args.warmup):
                    progress(f"large list, warm-up {i + 1}/{args.warmup} (not timed)")
                    await _download(ds, top.direct_url + path, ssl=top.direct_ssl)
                    await _download(ps, top.proxy_url + path, ssl=top.proxy_ssl)
                for i in range(args.rounds):
                    progress(f"large list, round {i + 1}/{args.rounds}")
                    with d_cpu:
                        size, took = await _download(ds, top.direct_url + path, ssl=top.direct_ssl)
                    d_rates.append(size / took / 1e6)
                    with p_cpu:
                        size, took = await _download(ps, top.proxy_url + path, ssl=top.proxy_ssl)
                    p_rates.append(size / took / 1e6)
                result["list_bytes"] = size
                result["list_direct_mb_s"] = round(statistics.median(d_rates), 1)
                result["list_proxy_mb_s"] = round(statistics.median(p_rates), 1)
                result["list_ratio"] = round(
                    result["list_proxy_mb_s"] / result["list_direct_mb_s"], 3
                )
                result["list_rounds_mb_s"] = [
                    [round(d, 1), round(p, 1)] for d, p in zip(d_rates, p_rates, strict=True)
                ]
                listed_mb = args.rounds * size / 1e6
                result["list_cpu_ms_per_mb"] = {
                    "direct": d_cpu.per_mb(listed_mb),
                    "proxied": p_cpu.per_mb(listed_mb),
                }
                progress(f"streaming {args.stream_mb} MB through the edge (RSS watched)")
                streamed = 0
                with RssWatch(top.edge_pid) as rss:
                    while streamed < args.stream_mb * 1e6:
                        got, _ = await _download(ps, top.proxy_url + path, ssl=top.proxy_ssl)
                        streamed += got
                result["edge_streamed_mb"] = round(streamed / 1e6)
                result["edge_rss_growth_mb"] = round(rss.growth_mb, 1)
            if args.floor:
                progress("starting the floor path (a minimal Python TLS-NATS-TLS pipe)")
                sim_dir = top.sim_kubeconfig.parent
                async with floor_path(top.base / "floor", sim_dir, top.sim_kubeconfig) as floor:
                    pf = await _port_forward_rates(top, args.pf_mb, args.rounds, args.warmup, floor)
            else:
                pf = await _port_forward_rates(top, args.pf_mb, args.rounds, args.warmup)
            result.update(pf)
            result["warmup_rounds"] = args.warmup
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


async def _port_forward_rates(
    top: Topology, megabytes: int, rounds: int, warmup: int, floor: FloorPath | None = None
) -> dict[str, Any]:
    """MB/s of bytes through `kubectl port-forward`, uploaded to the pod and downloaded from
    it, direct and through kubegate (and through the floor path, when given: see
    `ops.bench.floor_path`), after `warmup` rounds that are not timed.

    Within a round every path and direction runs once, and the medians are compared, as for
    the list: this machine's speed drifts by a quarter within minutes, which one run of each
    cannot tell from a change in kubegate."""
    from ops.bench_portforward import port_forward_rate

    paths: dict[str, tuple[Path, str | None]] = {
        "direct": (top.sim_kubeconfig, None),
        "proxied": (top.user_kubeconfig, CLUSTER),
    }
    meters = {"direct": top.cpu_meter, "proxied": top.cpu_meter}
    if floor is not None:
        paths["floor"] = (floor.kubeconfig, None)
        meters["floor"] = lambda: CpuMeter({"sim": top.sim.pid, **floor.pids})
    runs = [(direction, path) for direction in ("up", "down") for path in paths]
    cpu = {run: meters[run[1]]() for run in runs}
    rates: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    names = ", ".join(paths)
    for i in range(warmup + rounds):
        timed = i >= warmup
        progress(
            f"port-forward: {megabytes} MB up and down, {names}, "
            + (
                f"round {i - warmup + 1}/{rounds}"
                if timed
                else f"warm-up {i + 1}/{warmup} (not timed)"
            )
        )
        for direction, path in runs:
            kubeconfig, context = paths[path]
            workdir = top.base / f"pf-{direction}-{path}-{i}"
            meter = cpu[direction, path]
            with meter if timed else contextlib.nullcontext():
                run = await port_forward_rate(
                    kubeconfig, context, megabytes, workdir, download=direction == "down"
                )
            if timed:
                meter.add("kubectl", run.kubectl_cpu_s)
                rates[direction, path].append(run.mb_s)
    figures: dict[str, Any] = {}
    for direction, prefix in (("up", "portforward_"), ("down", "portforward_download_")):
        direct = statistics.median(rates[direction, "direct"])
        proxied = statistics.median(rates[direction, "proxied"])
        figures[f"{prefix}direct_mb_s"] = round(direct, 1)
        figures[f"{prefix}proxy_mb_s"] = round(proxied, 1)
        figures[f"{prefix}ratio"] = round(proxied / direct, 3) if direct else None
        figures[f"{prefix}rounds_mb_s"] = [
            [round(d, 1), round(p, 1)]
            for d, p in zip(rates[direction, "direct"], rates[direction, "proxied"], strict=True)
        ]
        figures[f"{prefix}cpu_ms_per_mb"] = {
            path: cpu[direction, path].per_mb(megabytes * rounds) for path in paths
        }
        if floor is not None:
            floored = rates[direction, "floor"]
            floor_mb_s = statistics.median(floored)
            figures[f"{prefix}floor_mb_s"] = round(floor_mb_s, 1)
            figures[f"{prefix}floor_ratio"] = round(floor_mb_s / direct, 3) if direct else None
            figures[f"{prefix}floor_rounds_mb_s"] = [round(f, 1) for f in floored]
    return figures


RUNNERS: dict[str, Any] = {"latency": latency, "stream": stream}


def _count(what: str, least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `least`, or one readable line."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = least - 1
        if n < least:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number of at least {least}, not {text!r}"
            )
        return n

    return parse


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("latency", help="small GETs: direct vs through edge+NATS+relay")
    p.add_argument("--requests", type=int, default=2000)
    p = sub.add_parser("stream", help="MB/s of a large list and a port-forward; edge RSS")
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--object-kib", type=int, default=20)
    p.add_argument("--stream-mb", type=int, default=1000)
    p.add_argument("--pf-mb", type=int, default=200)
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each port-forward round through a minimal Python TLS-NATS-TLS pipe (no "
        "HTTP, policy, frames or audit): what a lean Python path with kubegate's hops reaches "
        "on this machine, to read the ratio against (ops.bench.floor_path; default: on)",
    )
    p.add_argument(
        "--rounds",
        type=_count("rounds", 1),
        default=5,
        help="direct/proxied pairs per figure (the medians are compared): this machine's "
        "speed drifts by a quarter within minutes, so one pair says little",
    )
    p.add_argument(
        "--warmup",
        type=_count("warmup", 0),
        default=1,
        help="untimed pairs before each figure's timed rounds (default 1): on a fresh "
        "topology the first list ran at a sixth to a half of the steady rate, direct and "
        "proxied alike, and with five rounds two such pairs moved the median",
    )
    from ops import bench_revocation

    bench_revocation.add_parser(sub)
    RUNNERS["revocation"] = bench_revocation.run
