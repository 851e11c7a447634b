"""Console sessions at run time: open one after a login, authenticate its token, log activity,
end it at logout, and sweep the ones that are over.

Who writes what (all through `domain.control.ControlPlane`, in the `session` family):

- `ConsoleSessionStarted` when a login succeeds (token hash, absolute expiry, idle timeout);
- `ConsoleSessionTouched` when a token is used and the last logged activity is older than
  `touch_every` (one touch in flight per session per replica), so every edge judges idleness
  from the log alone;
- `ConsoleSessionEnded` reason `logout` at logout; `idle` / `expired` by the sweeper, through
  `expire_console_session`, which judges on the session's own history (a touch that raced the
  sweep wins); `revoked` by the sweeper for users disabled or revoked since the session began.

Every replica that runs the admin API runs a sweeper; their commands carry the same command id
per session, so a session ends once however many sweep. A token is refused the moment its
session is over, whether or not the end has been logged yet.

Liveness is judged by the policy projection (`SessionRecord.live_at`, the very rule the edge
applies for "console session required"), the token by this module's session book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain import errors as derr
from edge.errors import SessionInvalidError
from edge.identity_feed import IdentityFeed
from edge.identity_settings import IdentitySettings
from edge.sessions import MintedToken, OpenSession, SessionBook, session_id_of
from projections.policy import PolicyProjection

log = logging.getLogger("kubegate.edge.console_sessions")

SWEEPER = "kubegate-session-sweeper"


@dataclass(frozen=True)
class SessionPrincipal:
    """Who a session token stands for."""

    user: str
    session_id: str
    admin: bool
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartedSession:
    token: str
    session_id: str
    user: str
    method: str
    expires_at: datetime
    idle_timeout_s: int
    admin: bool
    groups: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "session_id": self.session_id,
            "user": self.user,
            "method": self.method,
            "expires_at": self.expires_at.isoformat(),
            "idle_timeout_s": self.idle_timeout_s,
            "admin": self.admin,
            "groups": list(self.groups),
        }


class ConsoleSessions:
    def __init__(
        self,
        *,
        control: Any,  # domain.control.ControlPlane
        book: SessionBook,
        feed: IdentityFeed,
        policy: PolicyProjection,
        settings: IdentitySettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.control = control
        self.book = book
        self.feed = feed
        self.policy = policy
        self.settings = settings
        self.clock = clock
        self.touching: set[str] = set()
        """Sessions with a touch in flight (one at a time per session)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- opening ---------------------------------------------------------------------------

    async def open(self, minted: MintedToken, user: str, method: str) -> StartedSession:
        """Record the session, then wait until this replica's read models hold it, so the
        token works here as soon as the caller has it."""
        now = self.clock()
        expires_at = now + self.settings.session_absolute
        idle_s = int(self.settings.session_idle.total_seconds())
        result = await asyncio.to_thread(
            self.control.start_console_session,
            minted.session_id,
            actor=user,
            command_id=f"session-start:{minted.session_id}",
            user=user,
            expires_at=expires_at,
            idle_timeout_s=idle_s,
            token_hash=minted.token_hash,
            method=method,
        )
        if result.positions:
            await self.visible(max(result.positions))
        groups = tuple(self.policy.groups_of(user))
        return StartedSession(
            token=minted.token,
            session_id=minted.session_id,
            user=user,
            method=method,
            expires_at=expires_at,
            idle_timeout_s=idle_s,
            admin=self.settings.admin_group in groups,
            groups=groups,
        )

    async def visible(self, seq: int) -> None:
        """Until both the session book and the policy projection hold log position `seq`
        (bounded by `visible_within`; a slow replica then answers 401 for a moment)."""
        timeout = self.settings.visible_within.total_seconds()
        if not await self.feed.wait_applied(seq, timeout):
            log.warning("session not yet visible in the session book", extra={"seq": seq})
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.policy.runner.positions().get("control", 0) < seq:
            if loop.time() > deadline:
                log.warning("session not yet visible in the policy projection", extra={"seq": seq})
                return
            await asyncio.sleep(0.005)

    # --- authenticating --------------------------------------------------------------------

    def find(self, token: str) -> OpenSession | None:
        """The session a token belongs to (right secret, not ended), live or not."""
        session_id = session_id_of(token)
        if session_id is None:
            return None
        found = self.book.get(session_id)
        if found is None or not found.matches(token):
            return None
        return found

    def live(self, session: OpenSession, now: datetime) -> bool:
        """The policy's judgement: not ended, expired, idle, nor cut by a revocation; and the
        user known and enabled."""
        state = self.policy.state
        user = state.users.get(session.user)
        record = state.sessions.get(session.session_id)
        if user is None or not user.enabled or record is None:
            return False
        return record.live_at(now, user.revoked_at) and not session.over_at(now)

    def authenticate(self, token: str) -> SessionPrincipal | None:
        """The principal of a live session's token, or None. Logs activity (throttled)."""
        found = self.find(token)
        now = self.clock()
        if found is None or not self.live(found, now):
            return None
        if now - found.last_active >= self.settings.touch_every:
            self._touch_soon(found)
        groups = tuple(self.policy.groups_of(found.user))
        return SessionPrincipal(
            user=found.user,
            session_id=found.session_id,
            admin=self.settings.admin_group in groups,
            groups=groups,
        )

    def _touch_soon(self, session: OpenSession) -> None:
        if session.session_id in self.touching:
            return
        self.touching.add(session.session_id)
        task = asyncio.get_running_loop().create_task(
            self._touch(session), name=f"touch-{session.session_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, session: OpenSession) -> None:
        try:
            result = await asyncio.to_thread(
                self.control.touch_console_session,
                session.session_id,
                actor=session.user,
                command_id=f"session-touch:{uuid.uuid4().hex}",
            )
            if result.positions:
                await self.feed.wait_applied(max(result.positions), 5.0)
        except derr.CommandRejectedError as exc:
            log.info(
                "session not touched", extra={"session_id": session.session_id, "why": str(exc)}
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning(
                "could not log session activity",
                extra={"session_id": session.session_id},
                exc_info=True,
            )
        finally:
            self.touching.discard(session.session_id)

    # --- ending ----------------------------------------------------------------------------

    async def logout(self, token: str) -> OpenSession:
        """End the token's session; returns once this replica refuses the token (the end is in
        its session book and policy), so a caller's next request cannot still get through."""
        found = self.find(token)
        if found is None:
            raise SessionInvalidError("not a console session token, or the session has ended")
        result = await asyncio.to_thread(
            self.control.end_console_session,
            found.session_id,
            actor=found.user,
            command_id=f"session-logout:{found.session_id}",
            reason="logout",
        )
        if result.positions:
            await self.visible(max(result.positions))
        return found

    def due(self, now: datetime) -> list[tuple[OpenSession, str]]:
        """Sessions to end now: over by time, or their user disabled or revoked since."""
        out = list(self.book.due(now))
        timed = {s.session_id for s, _ in out}
        users = self.policy.state.users
        for session in list(self.book.sessions.values()):
            if session.session_id in timed:
                continue
            user = users.get(session.user)
            if user is None:
                continue  # not in the policy yet: nothing to judge by
            if not user.enabled or (
                user.revoked_at is not None and session.started_at < user.revoked_at
            ):
                out.append((session, "revoked"))
        return out

    async def sweep(self) -> list[tuple[str, str]]:
        """End what is due; returns (session id, reason) of the sessions this call ended."""
        ended = []
        for session, reason in self.due(self.clock()):
            try:
                if reason == "revoked":
                    result = await asyncio.to_thread(
                        self.control.end_console_session,
                        session.session_id,
                        actor=SWEEPER,
                        command_id=f"session-revoked:{session.session_id}",
                        reason="revoked",
                    )
                else:
                    result = await asyncio.to_thread(
                        self.control.expire_console_session,
                        session.session_id,
                        actor=SWEEPER,
                        command_id=f"session-over:{session.session_id}",
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "could not end a console session",
                    extra={"session_id": session.session_id, "reason": reason},
                    exc_info=True,
                )
                continue
            if result.events:
                ended.append((session.session_id, result.events[-1].reason))
                await self.feed.wait_applied(max(result.positions), 5.0)
        return ended

    async def run_sweeper(self, *, at_least: float = 1.0, at_most: float = 30.0) -> None:
        """Sweep at each session deadline, when the sessions or the users' access change, and
        at least every `at_most` seconds."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session sweep failed")
            wait = at_most
            deadline = self.book.next_deadline()
            if deadline is not None:
                wait = min(at_most, max(0.0, (deadline - self.clock()).total_seconds()))
            wait = max(at_least, wait)
            self.feed.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: see projections.policy
                    await self.feed.changed.wait()
            await asyncio.sleep(at_least)

    def start_sweeper(self) -> None:
        task = asyncio.get_running_loop().create_task(self.run_sweeper(), name="session-sweeper")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
