"""A Kubernetes API simulator that real kubectl, helm and kubernetes-asyncio cannot tell from
kube-apiserver for what kubegate relies on.

Contract: imports nothing of kubegate's beyond `domain.errors` (its error root) and its own
modules; it stands in for a real cluster and must not share kubegate's assumptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ops.sim.simulator import Simulator

__all__ = ["Simulator"]


def __getattr__(name: str) -> Any:
    # lazy, so `kubegate --help` does not load the server stack
    if name == "Simulator":
        from ops.sim.simulator import Simulator

        return Simulator
    raise AttributeError(name)
