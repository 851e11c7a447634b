"""What the streaming subresources read from a Pod object, and the checks kube-apiserver makes.

Pure functions over the pod dict (as stored by the simulator core); no I/O. Messages are the
API server's and kubelet's own, so clients print what they would print against a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ops.sim.streams import status
from ops.sim.streams.errors import RuntimeConfigError

PORT_FORWARD_ANNOTATION = "sim.kubegate.io/port-forward"
"""Maps container ports to host TCP endpoints: "8080=127.0.0.1:34567,9090=127.0.0.1:4000".

A port not listed is forwarded to 127.0.0.1:<port>: the simulated pod shares the host's network,
like a pod with hostNetwork: true (so a server started with `kubectl exec` is reachable)."""

Pod = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False


def namespace(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("namespace") or "default")


def name(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("name") or "")


def uid(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("uid") or "")


def _containers(pod: Pod, key: str) -> list[dict[str, Any]]:
    return [c for c in pod.get("spec", {}).get(key) or [] if isinstance(c, dict)]


def containers(pod: Pod) -> list[ContainerSpec]:
    """The regular containers (the ones that run and log in the simulator)."""
    return [_spec(c) for c in _containers(pod, "containers")]


def _spec(raw: dict[str, Any]) -> ContainerSpec:
    env = tuple(
        (str(e["name"]), str(e.get("value", "")))
        for e in raw.get("env") or []
        if isinstance(e, dict) and e.get("name") and "valueFrom" not in e
    )
    return ContainerSpec(
        name=str(raw.get("name", "")),
        command=tuple(str(a) for a in raw.get("command") or []),
        args=tuple(str(a) for a in raw.get("args") or []),
        env=env,
        working_dir=str(raw.get("workingDir") or ""),
        tty=bool(raw.get("tty")),
        stdin=bool(raw.get("stdin")),
        stdin_once=bool(raw.get("stdinOnce")),
    )


def all_container_names(pod: Pod) -> list[str]:
    names = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        names += [str(c.get("name", "")) for c in _containers(pod, key)]
    return names


def choose_container(pod: Pod, requested: str) -> str:
    """kube-apiserver's validateContainer: default the only container, else require a valid one."""
    pod_name = name(pod)
    if not requested:
        regular = [c.name for c in containers(pod)]
        if len(regular) == 1:
            return regular[0]
        if not regular:
            raise status.bad_request(f"a container name must be specified for pod {pod_name}")
        listed = " ".join(all_container_names(pod))
        raise status.bad_request(
            f"a container name must be specified for pod {pod_name}, choose one of: [{listed}]"
        )
    if requested not in all_container_names(pod):
        raise status.bad_request(f"container {requested} is not valid for pod {pod_name}")
    return requested


def require_host(pod: Pod) -> None:
    """A pod the scheduler has not placed has no kubelet to stream from."""
    if not has_host(pod):
        raise status.bad_request(f"pod {name(pod)} does not have a host assigned")


def has_host(pod: Pod) -> bool:
    """Pending pods without spec.nodeName are unscheduled; other pods count as placed even if
    the simulator leaves nodeName empty."""
    phase = pod.get("status", {}).get("phase")
    return bool(pod.get("spec", {}).get("nodeName")) or phase not in (None, "Pending")


@dataclass(frozen=True, slots=True)
class ContainerState:
    state: str  # "running", "waiting" or "terminated"
    reason: str = ""


def container_state(pod: Pod, container: str) -> ContainerState:
    """From status.containerStatuses when present, else from the pod phase.

    A pod without any status counts as running: the simulator may store pods as submitted."""
    pod_status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in pod_status.get(key) or []:
            if isinstance(entry, dict) and entry.get("name") == container:
                state = entry.get("state") or {}
                if "running" in state:
                    return ContainerState("running")
                if "terminated" in state:
                    return ContainerState(
                        "terminated", (state["terminated"] or {}).get("reason", "")
                    )
                if "waiting" in state:
                    return ContainerState(
                        "waiting", (state["waiting"] or {}).get("reason") or "ContainerCreating"
                    )
    phase = pod_status.get("phase")
    if phase in (None, "", "Running"):
        return ContainerState("running")
    if phase in ("Succeeded", "Failed"):
        return ContainerState("terminated", "Completed" if phase == "Succeeded" else "Error")
    return ContainerState("waiting", "ContainerCreating")


def is_running(pod: Pod) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in (None, "", "Running")


def port_map(pod: Pod) -> dict[int, tuple[str, int]]:
    """The port-forward annotation parsed; raises RuntimeConfigError when it is malformed."""
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(PORT_FORWARD_ANNOTATION, "")
    mapping: dict[int, tuple[str, int]] = {}
    for item in str(raw).replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        port_text, sep, target = item.partition("=")
        host, colon, target_port = target.strip().rpartition(":")
        try:
            port, to_port = int(port_text), int(target_port)
        except ValueError:
            raise RuntimeConfigError(f"bad {PORT_FORWARD_ANNOTATION} entry {item!r}") from None
        if not sep or not colon or not host or not (0 < port < 65536 and 0 < to_port < 65536):
            raise RuntimeConfigError(f"bad {PORT_FORWARD_ANNOTATION} entry {item!r}")
        mapping[port] = (host.strip("[]"), to_port)
    return mapping
