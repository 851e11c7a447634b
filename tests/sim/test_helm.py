"""helm v4 (server-side apply by default) installs, upgrades and uninstalls a chart."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ops.sim import Simulator
from tests import tools
from tests.sim.conftest import Kubectl, wait_for

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parent.parent / "charts" / "hello"


def test_helm_install_upgrade_uninstall(
    sim: Simulator, kubectl: Kubectl, ns_name: str, tmp_path: Path
) -> None:
    try:
        helm_bin = tools.helm()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    env = {
        **os.environ,
        "KUBECONFIG": str(sim.kubeconfig_path),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
        "HOME": str(tmp_path),
    }

    def helm(*args: str) -> str:
        result = subprocess.run(
            [str(helm_bin), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
        return result.stdout

    kubectl("create", "namespace", ns_name)
    out = helm("install", "rel", str(CHART), "-n", ns_name, "--wait", "--timeout", "60s")
    assert "STATUS: deployed" in out
    deploy = json.loads(
        kubectl("-n", ns_name, "get", "deploy", "rel-web", "-o", "json", "--show-managed-fields")
    )
    assert deploy["status"]["readyReplicas"] == 1
    managers = {(m["manager"], m["operation"]) for m in deploy["metadata"]["managedFields"]}
    assert ("helm", "Apply") in managers  # helm v4 applies server-side
    assert (
        kubectl("-n", ns_name, "get", "cm", "rel-config", "-o", "jsonpath={.data.message}")
        == "hello"
    )

    helm(
        "upgrade",
        "rel",
        str(CHART),
        "-n",
        ns_name,
        "--set",
        "replicaCount=2",
        "--set",
        "message=bye",
        "--wait",
        "--timeout",
        "60s",
    )
    assert (
        kubectl("-n", ns_name, "get", "cm", "rel-config", "-o", "jsonpath={.data.message}") == "bye"
    )
    assert (
        kubectl("-n", ns_name, "get", "deploy", "rel-web", "-o", "jsonpath={.status.readyReplicas}")
        == "2"
    )
    releases = json.loads(helm("list", "-n", ns_name, "-o", "json"))
    assert [(r["name"], r["revision"], r["status"]) for r in releases] == [("rel", "2", "deployed")]

    helm("uninstall", "rel", "-n", ns_name, "--wait")
    wait_for(
        lambda: (
            not kubectl(
                "-n",
                ns_name,
                "get",
                "deploy,svc,cm,sa",
                "-l",
                "app.kubernetes.io/instance=rel",
                "-o",
                "name",
            ).strip()
        ),
        "chart resources removed",
    )
    secrets = kubectl("-n", ns_name, "get", "secrets", "-o", "name")
    assert "sh.helm.release" not in secrets
