"""Feeds the login ledger and the session book from the log: one projection runner over the
control stream, filtered to the `login` and `session` families.

`wait_applied(seq)` lets a writer read its own write: a login returns its token only once this
replica's models hold the session it started, and a login that lost an append race waits for
the winner's event before judging again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from broker import subjects
from edge.lockout import LoginLedger
from edge.sessions import SessionBook
from projections.records import LogRecord
from projections.runner import ProjectionRunner


class IdentityFeed:
    def __init__(
        self,
        nc: NatsClient,
        *,
        ledger: LoginLedger,
        book: SessionBook,
        registry: CollectorRegistry,
        name: str = "identity",
    ) -> None:
        self.ledger = ledger
        self.book = book
        self.applied = 0
        self.changed = asyncio.Event()
        """Set after every applied batch (the sweeper clears it)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.runner = ProjectionRunner(
            nc,
            self,
            name=name,
            registry=registry,
            streams=("control",),
            filter_subjects={
                "control": [
                    subjects.family_wildcard("control", "login"),
                    subjects.family_wildcard("control", "session"),
                ]
            },
        )

    def apply_batch(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            self.ledger.apply(record.seq, record.event)
            self.book.apply(record.event)
            self.applied = record.seq
        self.changed.set()
        still = []
        for seq, waiter in self._waiters:
            if seq <= self.applied:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((seq, waiter))
        self._waiters = still

    async def wait_applied(self, seq: int, within: float) -> bool:
        """Until the models hold log position `seq`; False if that took over `within` seconds."""
        if seq <= self.applied:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        try:
            await asyncio.wait_for(waiter, within)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters = [(s, w) for s, w in self._waiters if w is not waiter]

    async def start(self) -> None:
        await self.runner.start()

    async def wait_ready(self) -> None:
        await self.runner.wait_caught_up()

    async def stop(self) -> None:
        await self.runner.stop()
        for _, waiter in self._waiters:
            waiter.cancel()
        self._waiters = []
