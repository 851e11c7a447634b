"""`kubegate login` / `kubegate logout` as a person uses them, against `kubegate up` (real
processes, real NATS, real TLS): a password set with the CLI, a session stored next to the
admin config, calls made with it, and logout ending it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.client import AdminClient, ApiCallError
from ops.config import AdminConfig
from tests.edge.identity_harness import uid
from tests.ops.test_up_cli import REPO, wait_for_file

pytestmark = pytest.mark.e2e


def kubegate(*args: str, data: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env={**os.environ, "KUBEGATE_CONFIG": str(data / "admin.conf")},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = Path(tmp_path_factory.mktemp("up"))
    command = ["up", "--data-dir", str(data), "--edge-port", "0", "--admin-port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", *command],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_file(data / "ready.json", proc)
        yield data
    finally:
        proc.terminate()
        proc.wait(30)


def test_login_stores_a_session_and_logout_ends_it(data: Path) -> None:
    user = uid("erin")
    assert kubegate("user", "add", user, data=data).returncode == 0
    done = kubegate("user", "passwd", user, "--password-stdin", data=data, stdin="long enough pw\n")
    assert done.returncode == 0, done.stderr

    wrong = kubegate("login", "--user", user, "--password-stdin", data=data, stdin="nope\n")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "error: invalid user name or password"
    assert not (data / "session.conf").exists()

    login = kubegate(
        "login", "--user", user, "--password-stdin", data=data, stdin="long enough pw\n"
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith(f"logged in as {user} until ")
    session_file = data / "session.conf"
    assert session_file.stat().st_mode & 0o077 == 0, "the token is readable by its owner only"
    session = AdminConfig.load(session_file)
    assert session.token.startswith("kgs.")
    me = AdminClient(session).get("/v1/whoami")
    assert me["name"] == user and me["admin"] is False

    printed = kubegate(
        "login",
        "--user",
        user,
        "--password-stdin",
        "--print-token",
        data=data,
        stdin="long enough pw\n",
    )
    assert printed.returncode == 0 and printed.stdout.strip().startswith("kgs.")
    assert printed.stdout.strip() != session.token

    out = kubegate("logout", data=data)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"logged out {user}"
    assert not session_file.exists()
    with pytest.raises(ApiCallError) as refused:
        AdminClient(session).get("/v1/whoami")
    assert refused.value.status == 401
    again = kubegate("logout", data=data)
    assert again.returncode == 1 and "not logged in" in again.stderr
