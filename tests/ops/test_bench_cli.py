"""The benchmarks run end to end and print the JSON they promise (figures are not judged here)."""

from __future__ import annotations

import json

from tests import tools
from tests.ops.test_up_cli import kubegate


def test_bench_log_prints_every_figure() -> None:
    out = kubegate(
        "bench",
        "log",
        "--json",
        "--events",
        "3000",
        "--appends",
        "200",
        "--activity",
        "2000",
        "--audit-events",
        "3000",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    for key in ("control_appends_per_s", "activity_events_per_s", "audit_ingest_events_per_s"):
        assert figures[key] > 0, key
    assert figures["rebuild_events"] == 3000
    assert figures["rebuild_s"] > 0
    assert "[bench] rebuilding the policy projection" in out.stderr


def test_bench_revocation_counts_every_edge_and_relay_worker() -> None:
    out = kubegate(
        "bench", "revocation", "--relays", "4", "--edges", "2", "--workers", "2", "--json",
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["applied"] == 6  # 4 relays in 2 worker processes + 2 edges
    assert figures["client_streams_ended"] == 4
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["harness_scheduling"] == "SCHED_IDLE"  # the harness yields the CPU


def test_bench_stream_prints_rates_and_where_the_cpu_went() -> None:
    out = kubegate(
        "bench", "stream", "--json", "--objects", "20", "--object-kib", "4",
        "--stream-mb", "1", "--pf-mb", "20", "--rounds", "3", "--no-floor",
        env={"KUBEGATE_KUBECTL": str(tools.kubectl_132())}, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    for key in ("list_direct_mb_s", "list_proxy_mb_s", "portforward_proxy_mb_s"):
        assert figures[key] > 0, key
    assert figures["edge_streamed_mb"] >= 1
    rounds = figures["portforward_rounds_mb_s"]  # direct and proxied alternate, medians compared
    assert len(rounds) == 3 and all(d > 0 and p > 0 for d, p in rounds)
    assert figures["portforward_proxy_mb_s"] == sorted(p for _, p in rounds)[1]
    listed = figures["list_rounds_mb_s"]
    assert len(listed) == 3 and figures["list_direct_mb_s"] == sorted(d for d, _ in listed)[1]
    pf = figures["portforward_cpu_ms_per_mb"]
    # a proxied byte crosses the edge, nats-server and the relay; a direct one none of them
    assert {"edge", "nats", "relay", "kubectl", "sim"} <= set(pf["proxied"])
    assert pf["proxied"]["total"] > pf["direct"]["total"] > 0
    assert set(figures["list_cpu_ms_per_mb"]) == {"direct", "proxied"}
    assert "portforward_floor_mb_s" not in figures and "floor" not in pf  # --no-floor
    # one untimed pair comes first by default, for the list and for the port-forward
    assert figures["warmup_rounds"] == 1
    assert "large list, warm-up 1/1 (not timed)" in out.stderr
    assert "port-forward: 20 MB up and down, direct, proxied, warm-up 1/1 (not timed)" in out.stderr
    # the download direction: the pod's side sends, every byte counted at the client
    down = figures["portforward_download_rounds_mb_s"]
    assert len(down) == 3 and all(d > 0 and p > 0 for d, p in down)
    assert figures["portforward_download_proxy_mb_s"] == sorted(p for _, p in down)[1]
    ratio = figures["portforward_download_proxy_mb_s"] / figures["portforward_download_direct_mb_s"]
    assert abs(figures["portforward_download_ratio"] - ratio) < 0.01
    down_cpu = figures["portforward_download_cpu_ms_per_mb"]
    assert {"edge", "nats", "relay", "kubectl", "sim"} <= set(down_cpu["proxied"])


def test_bench_stream_times_the_floor_path_in_the_same_rounds_by_default() -> None:
    out = kubegate(
        "bench", "stream", "--json", "--objects", "5", "--object-kib", "4",
        "--stream-mb", "1", "--pf-mb", "10", "--rounds", "2", "--warmup", "0",
        env={"KUBEGATE_KUBECTL": str(tools.kubectl_132())}, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["warmup_rounds"] == 0 and "warm-up" not in out.stderr
    floored = figures["portforward_floor_rounds_mb_s"]  # every byte reached the sink each time
    assert len(floored) == 2 and all(f > 0 for f in floored)
    assert abs(figures["portforward_floor_mb_s"] - sum(floored) / 2) <= 0.1  # median of two
    ratio = figures["portforward_floor_mb_s"] / figures["portforward_direct_mb_s"]
    assert abs(figures["portforward_floor_ratio"] - ratio) < 0.01
    floor = figures["portforward_cpu_ms_per_mb"]["floor"]
    # its bytes cross its own edge, nats-server and relay, and the same simulator and kubectl
    assert {"edge", "nats", "relay", "sim", "kubectl"} <= set(floor)
    assert "floor path" in out.stderr
    down = figures["portforward_download_floor_rounds_mb_s"]  # and the other way
    assert len(down) == 2 and all(f > 0 for f in down)
    assert {"edge", "nats", "relay"} <= set(figures["portforward_download_cpu_ms_per_mb"]["floor"])


def test_bench_latency_prints_direct_and_proxied_percentiles() -> None:
    out = kubegate("bench", "latency", "--json", "--requests", "100", timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["requests"] == 100
    assert 0 < figures["direct_p50_ms"] <= figures["direct_p99_ms"]
    assert 0 < figures["proxy_p50_ms"] <= figures["proxy_p99_ms"]


def test_bench_stream_refuses_zero_rounds_in_one_line() -> None:
    out = kubegate("bench", "stream", "--rounds", "0", timeout=60)
    assert out.returncode == 2
    assert "rounds must be a whole number of at least 1, not '0'" in out.stderr


def test_bench_stream_refuses_a_negative_warmup_in_one_line() -> None:
    out = kubegate("bench", "stream", "--warmup", "-1", timeout=60)
    assert out.returncode == 2
    assert "warmup must be a whole number of at least 0, not '-1'" in out.stderr
