"""Real kubectl (1.32 and 1.33) against the simulator: the everyday workflow end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.sim.conftest import Kubectl, SimThread, wait_for

pytestmark = pytest.mark.e2e


def deployment(name: str, image: str = "nginx:1.27", replicas: int = 2) -> str:
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
          labels: {{app: {name}}}
        spec:
          replicas: {replicas}
          selector:
            matchLabels: {{app: {name}}}
          template:
            metadata:
              labels: {{app: {name}}}
            spec:
              containers:
              - name: main
                image: {image}
                ports:
                - containerPort: 80
        """)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def pod_names(kubectl: Kubectl, ns: str, selector: str) -> list[str]:
    out = kubectl(
        "-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"
    )
    return out.split()


def test_deployment_lifecycle(any_kubectl: Kubectl, ns_name: str, tmp_path: Path) -> None:
    k = any_kubectl
    assert "created" in k("create", "namespace", ns_name)
    manifest = write(tmp_path, "web.yaml", deployment("web"))
    assert "deployment.apps/web created" in k("-n", ns_name, "apply", "-f", manifest)
    assert "successfully rolled out" in k(
        "-n", ns_name, "rollout", "status", "deploy/web", "--timeout=30s"
    )

    table = k("-n", ns_name, "get", "pods")
    header, *rows = table.strip().splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(rows) == 2 and all(r.split()[1:3] == ["1/1", "Running"] for r in rows)

    obj = yaml.safe_load(k("-n", ns_name, "get", "deploy", "web", "-o", "yaml"))
    assert obj["metadata"]["uid"] and int(obj["metadata"]["resourceVersion"]) > 0
    assert obj["metadata"]["generation"] == 1
    assert obj["status"]["readyReplicas"] == 2
    assert obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"

    assert "labeled" in k("-n", ns_name, "label", "deploy", "web", "tier=frontend")
    assert "tier=frontend" in k("-n", ns_name, "get", "deploy", "web", "--show-labels")
    assert "scaled" in k("-n", ns_name, "scale", "deploy", "web", "--replicas=3")
    k("-n", ns_name, "rollout", "status", "deploy/web", "--timeout=30s")
    assert len(pod_names(k, ns_name, "app=web")) == 3

    # a new image rolls out a second ReplicaSet; the old one is scaled to zero
    k("-n", ns_name, "set", "image", "deploy/web", "main=nginx:1.28")
    k("-n", ns_name, "rollout", "status", "deploy/web", "--timeout=30s")
    rs = json.loads(k("-n", ns_name, "get", "rs", "-o", "json"))["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    assert "2" in k("-n", ns_name, "rollout", "history", "deploy/web")

    assert "deleted" in k("-n", ns_name, "delete", "deploy", "web")
    wait_for(lambda: not pod_names(k, ns_name, "app=web"), "pods garbage-collected")
    assert "deleted" in k("delete", "namespace", ns_name, "--timeout=30s")
    gone = k.run("get", "namespace", ns_name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_get_watch_sees_added_modified_deleted(kubectl: Kubectl, ns_name: str) -> None:
    kubectl("create", "namespace", ns_name)
    kubectl("-n", ns_name, "create", "configmap", "first", "--from-literal=a=1")
    watcher = kubectl.popen("-n", ns_name, "get", "configmaps", "-w", "--output-watch-events")
    lines: list[str] = []
    try:
        import threading

        reader = threading.Thread(
            target=lambda: lines.extend(iter(watcher.stdout.readline, "")), daemon=True
        )
        reader.start()
        wait_for(lambda: any("first" in line for line in lines), "the initial list")
        kubectl("-n", ns_name, "create", "configmap", "second", "--from-literal=a=1")
        kubectl("-n", ns_name, "label", "configmap", "second", "x=y")
        kubectl("-n", ns_name, "delete", "configmap", "second")
        wait_for(lambda: any(line.startswith("DELETED") for line in lines), "a DELETED event")
    finally:
        watcher.terminate()
        watcher.wait(10)
    events = [line.split()[0] for line in lines if "second" in line]
    assert events[0] == "ADDED" and "MODIFIED" in events and events[-1] == "DELETED"
    assert lines[0].split()[:2] == ["EVENT", "NAME"]


def test_server_side_apply_conflicts_and_force(
    kubectl: Kubectl, ns_name: str, tmp_path: Path
) -> None:
    kubectl("create", "namespace", ns_name)
    manifest = write(tmp_path, "d.yaml", deployment("ssa", replicas=1))
    assert "serverside-applied" in kubectl("-n", ns_name, "apply", "--server-side", "-f", manifest)
    # another manager takes .spec.replicas
    kubectl("-n", ns_name, "scale", "deploy", "ssa", "--replicas=4")
    conflict = kubectl.run("-n", ns_name, "apply", "--server-side", "-f", manifest, check=False)
    assert conflict.returncode != 0
    assert "Apply failed with 1 conflict" in conflict.stderr and ".spec.replicas" in conflict.stderr
    kubectl("-n", ns_name, "apply", "--server-side", "--force-conflicts", "-f", manifest)
    obj = json.loads(
        kubectl("-n", ns_name, "get", "deploy", "ssa", "-o", "json", "--show-managed-fields")
    )
    assert obj["spec"]["replicas"] == 1
    applier = next(m for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply")
    assert applier["manager"] == "kubectl" and "f:replicas" in applier["fieldsV1"]["f:spec"]
    # dropping a field from the applied config removes it
    smaller = deployment("ssa", replicas=1).replace(
        "        ports:\n        - containerPort: 80\n", ""
    )
    kubectl("-n", ns_name, "apply", "--server-side", "-f", write(tmp_path, "d2.yaml", smaller))
    obj = json.loads(kubectl("-n", ns_name, "get", "deploy", "ssa", "-o", "json"))
    assert "ports" not in obj["spec"]["template"]["spec"]["containers"][0]


def test_strict_field_validation_and_invalid_objects(
    kubectl: Kubectl, ns_name: str, tmp_path: Path
) -> None:
    kubectl("create", "namespace", ns_name)
    bad = deployment("strict").replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n")
    result = kubectl.run(
        "-n", ns_name, "apply", "-f", write(tmp_path, "bad.yaml", bad), check=False
    )
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "spec.replicaz"' in result.stderr
    invalid = deployment("Bad_Name")
    result = kubectl.run(
        "-n", ns_name, "create", "-f", write(tmp_path, "inv.yaml", invalid), check=False
    )
    assert result.returncode != 0
    assert (
        'The Deployment "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"'
        in result.stderr
    )
    dup = kubectl.run("create", "namespace", ns_name, check=False)
    assert dup.returncode != 0 and f'namespaces "{ns_name}" already exists' in dup.stderr


def test_explain_uses_openapi_v3(kubectl: Kubectl) -> None:
    out = kubectl("explain", "deployment.spec.strategy")
    assert (
        "KIND:       Deployment" in out
        and "rollingUpdate" in out
        and "<RollingUpdateDeployment>" in out
    )
    pods = kubectl("explain", "pods.spec.containers.image")
    assert "FIELD: image <string>" in pods


def test_auth_can_i_with_view_only_token(
    kubectl: Kubectl, sim_thread: SimThread, ns_name: str, tmp_path: Path
) -> None:
    kubectl("create", "namespace", ns_name)
    kubectl("-n", ns_name, "create", "serviceaccount", "reader")
    kubectl(
        "-n",
        ns_name,
        "create",
        "rolebinding",
        "reader-view",
        "--clusterrole=view",
        f"--serviceaccount={ns_name}:reader",
    )
    token = kubectl("-n", ns_name, "create", "token", "reader").strip()
    config = sim_thread.sim.write_kubeconfig(tmp_path / "reader.kubeconfig", "reader", token=token)
    reader = Kubectl(kubectl.binary, config, tmp_path / "reader-cache")
    assert (
        reader.run("-n", ns_name, "auth", "can-i", "list", "pods", check=False).stdout.strip()
        == "yes"
    )
    assert (
        reader.run(
            "-n", ns_name, "auth", "can-i", "get", "deployments.apps", check=False
        ).stdout.strip()
        == "yes"
    )
    assert (
        reader.run("-n", ns_name, "auth", "can-i", "create", "pods", check=False).stdout.strip()
        == "no"
    )
    assert (
        reader.run("-n", ns_name, "auth", "can-i", "get", "secrets", check=False).stdout.strip()
        == "no"
    )
    denied = reader.run("-n", ns_name, "get", "secrets", check=False)
    assert denied.returncode != 0
    assert (
        f'secrets is forbidden: User "system:serviceaccount:{ns_name}:reader" cannot list resource '
        f'"secrets" in API group "" in the namespace "{ns_name}"'
    ) in denied.stderr
    who = reader("auth", "whoami", "-o", "json")
    assert (
        json.loads(who)["status"]["userInfo"]["username"]
        == f"system:serviceaccount:{ns_name}:reader"
    )


def test_exec_and_logs_are_routed_to_the_pod_runtime(
    kubectl: Kubectl, sim: object, ns_name: str
) -> None:
    if getattr(sim, "runtime", None) is None:
        pytest.skip("this build has no pod runtime (ops.sim.runtime)")
    kubectl("create", "namespace", ns_name)
    kubectl("-n", ns_name, "run", "box", "--image=busybox")
    kubectl("-n", ns_name, "wait", "--for=condition=Ready", "pod/box", "--timeout=30s")
    result = kubectl.run(
        "-n", ns_name, "exec", "box", "--", "sh", "-c", "echo routed; exit 4", check=False
    )
    assert result.stdout.strip() == "routed" and result.returncode == 4
    assert kubectl.run("-n", ns_name, "logs", "box", check=False).returncode == 0
    missing = kubectl.run("-n", ns_name, "exec", "nobox", "--", "true", check=False)
    assert 'pods "nobox" not found' in missing.stderr
