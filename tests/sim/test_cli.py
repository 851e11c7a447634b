"""`kubegate sim --dir D` prints its admin kubeconfig and serves until stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tools
from tests.sim.conftest import Kubectl

pytestmark = pytest.mark.e2e


def test_cli_serves_until_stopped(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "sim", "--dir", str(tmp_path / "d")],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first == str(tmp_path / "d" / "admin.kubeconfig"), (
            proc.stderr.read() if not first else first
        )
        kubectl = Kubectl(tools.kubectl_132(), Path(first), tmp_path / "cache")
        assert "default" in kubectl("get", "namespaces", "-o", "name")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0


def test_cli_reports_unusable_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "sim", "--dir", str(blocker / "sub")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("kubegate sim: cannot use") and "Traceback" not in result.stderr
