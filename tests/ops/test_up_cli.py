"""`kubegate up` and the admin CLI, as a person uses them: real processes, real NATS, real TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.server import free_port

REPO = Path(__file__).resolve().parents[2]


def kubegate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_file(path: Path, proc: subprocess.Popen, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kubegate up exited: {proc.stderr.read() if proc.stderr else ''}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    data = Path(tmp_path_factory.mktemp("up"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "up",
            "--data-dir",
            str(data),
            "--edge-port",
            "0",
            "--admin-port",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_for_file(data / "ready.json", proc)
        yield data, ready
    finally:
        proc.terminate()
        proc.wait(30)
    assert not (data / "ready.json").exists(), "ready.json must go when the control plane stops"


def test_ready_file_names_the_endpoints(running) -> None:
    data, ready = running
    assert ready["nats_url"].startswith("nats://")
    assert ready["admin_url"].startswith("https://")
    assert ready["edge_url"].startswith("https://")
    assert Path(ready["admin_config"]) == data / "admin.conf"


def test_commands_append_events_and_audit_sees_them(running) -> None:
    data, _ = running
    env = {"KUBEGATE_CONFIG": str(data / "admin.conf")}
    assert kubegate("group", "add", "sre", env=env).stdout.strip() == "group sre added"
    done = kubegate("user", "add", "carol", "--group", "sre", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "user carol added in sre"

    again = kubegate("user", "add", "carol", env=env)
    assert again.returncode == 1
    assert again.stderr.strip() == "error: user 'carol' exists"
    missing = kubegate("user", "add", "dave", "--group", "nope", env=env)
    assert missing.returncode == 1 and "no group 'nope'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    tail = kubegate("events", "tail", "--json", "-n", "50", "--data-dir", str(data))
    assert tail.returncode == 0, tail.stderr
    seen = [json.loads(line) for line in tail.stdout.splitlines()]
    facts = [(e["type"], e.get("group"), e.get("user")) for e in seen]
    assert ("GroupCreated", "sre", None) in facts
    assert ("UserRegistered", None, "carol") in facts
    assert ("MemberAdded", "sre", "carol") in facts
    assert all(e["stream"] == "KG_CONTROL" for e in seen)

    deadline = time.monotonic() + 30
    while True:
        sql = kubegate(
            "audit",
            "sql",
            "--json",
            "SELECT type, actor FROM events WHERE subject = 'kg.evt.user.carol' ORDER BY seq",
            env=env,
        )
        assert sql.returncode == 0, sql.stderr
        rows = [json.loads(line) for line in sql.stdout.splitlines()]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows == [{"type": "UserRegistered", "actor": "admin"}]

    table = kubegate("audit", "sql", "SELECT count(*) AS n FROM user_events", env=env)
    assert table.stdout.splitlines()[0].strip() == "n"
    assert table.stdout.strip().endswith("(1 row)")


def test_audit_sql_refuses_writes(running) -> None:
    data, _ = running
    refused = kubegate("audit", "sql", "DROP TABLE user_events", "--data-dir", str(data))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: query refused")


def test_version() -> None:
    out = kubegate("--version")
    assert out.returncode == 0 and out.stdout.startswith("kubegate ")


def test_unreachable_nats_is_one_line_and_nonzero(tmp_path: Path) -> None:
    port = free_port()
    out = kubegate(
        "up",
        "--data-dir",
        str(tmp_path),
        "--nats",
        f"nats://127.0.0.1:{port}",
        "--edge-port",
        "0",
        "--admin-port",
        "0",
        timeout=60,
    )
    assert out.returncode == 3
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "ready.json").exists()


def test_no_running_instance_is_a_clear_error(tmp_path: Path) -> None:
    out = kubegate("user", "add", "x", "--data-dir", str(tmp_path))
    assert out.returncode == 3
    assert (
        out.stderr.strip()
        == f"error: no admin config at {tmp_path / 'admin.conf'}: is `kubegate up` running?"
    )


def test_relay_credentials_are_least_privileged(running, tmp_path: Path) -> None:
    data, ready = running
    out = tmp_path / "dev.creds"
    made = kubegate("cluster", "creds", "dev", "-o", str(out), "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    cred = json.loads(out.read_text())
    assert cred["role"] == "relay" and cred["cluster"] == "dev"
    again = kubegate(
        "cluster", "creds", "dev", "-o", str(tmp_path / "again"), "--data-dir", str(data)
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again").read_text()) == cred
    # The embedded NATS refuses anonymous clients: everything runs with its own user.
    import asyncio

    import nats as nats_client

    async def anonymous() -> None:
        await nats_client.connect(ready["nats_url"], allow_reconnect=False, connect_timeout=2)

    with pytest.raises(Exception, match="Authorization"):
        asyncio.run(anonymous())


def test_demo_starts_clean_and_says_what_to_try(tmp_path: Path) -> None:
    """`kubegate demo` is the first thing a newcomer runs: its output is the banner, not error
    tracebacks (relay credentials are probed while NATS reloads; refusals then are expected)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "demo", "--dir", str(tmp_path / "demo"),
         "--edge-port", "0", "--admin-port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = wait_for_file(tmp_path / "demo" / "ready.json", proc, limit=180)
        assert ready["edge_url"].startswith("https://")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert "kubegate demo is running" in out
    assert "alice.kubeconfig" in out
    errors = [line for line in (out + err).splitlines() if '"level": "error"' in line]
    assert errors == []
