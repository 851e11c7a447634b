"""The web console: a static single-page app at `/console/`, the `GET /v1/me/clusters` and
`POST /v1/me/kubeconfig` endpoints, and the browser kubectl shell at `GET /v1/shell`.

It lives inside the admin API (handlers reach `edge.admin_api.CONTEXT`): sessions come from
the identity service through `AdminContext.authenticate_session`, policy from the policy
projection, certificates from kubegate's CA and the control plane. Wire it with
`Console(...).routes()` into `AdminContext.extra_routes` and `await console.close()` before
the admin API stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.console.me import KubeconfigSettings, MeHandlers
from edge.console.shell import ShellManager, ShellSettings
from edge.console.web import ConsolePages

__all__ = ["Console", "ConsoleSettings", "KubeconfigSettings", "ShellSettings"]


@dataclass
class ConsoleSettings:
    shell: ShellSettings = field(default_factory=ShellSettings)
    kubeconfig: KubeconfigSettings = field(default_factory=KubeconfigSettings)


class Console:
    """The console's parts for one admin API."""

    def __init__(
        self, settings: ConsoleSettings | None = None, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings or ConsoleSettings()
        self.pages = ConsolePages()
        self.me = MeHandlers(self.settings.kubeconfig)
        self.shells = ShellManager(self.settings.shell, registry=registry)

    def routes(self) -> list[web.RouteDef]:
        return [*self.pages.routes(), *self.me.routes(), *self.shells.routes()]

    async def close(self) -> None:
        """Close every open shell (their commands end, their directories go)."""
        await self.shells.close()
