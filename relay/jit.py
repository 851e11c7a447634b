"""Just-in-time service accounts: one per user and cluster, holding exactly the user's grants.

On a user's first request the relay makes (idempotently) its namespace for kubegate's accounts,
the user's ServiceAccount, and the ClusterRoles and bindings of the user's `binding_plan`; then it
asks for a short-lived token (TokenRequest) and keeps it in memory, renewing it at 80% of its
life. Whenever the plan changes the bindings are reconciled: what the plan lacks is deleted.

Several relay replicas share a cluster. Names are deterministic, so they converge on the same
objects: a create that finds the object already there is fine, and only the replica whose create
made the account emits `ServiceAccountProvisioned`. Event ids derive from the account's uid, so a
retried append is stored once.

Idleness: each replica writes the account's last use into an annotation, at most once a minute
(and at once when it has not written for that long, which also proves the account still exists).
The sweeper deletes accounts whose annotation is older than the idle period, with a
resourceVersion precondition, so an account touched meanwhile by another replica survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.tasks import cancel_and_wait
from domain import events
from domain.policy.bindings import GRANT_LABEL, MANAGED_BY, OWNER_LABEL, BindingPlan
from relay.errors import JitError, KubeApiError, KubeConflictError, NoAccessError, RelayError
from relay.kube import KubeObjects, Object
from relay.metrics import RelayMetrics
from relay.plans import Planner, service_account_name

log = logging.getLogger("kubegate.relay.jit")

USER_ANNOTATION = "kubegate.io/user"
LAST_USED_ANNOTATION = "kubegate.io/last-used"
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())

Emit = Callable[[events.Event], Awaitable[Any]]

MIN_TOKEN_TTL = timedelta(minutes=10)
"""kube-apiserver refuses TokenRequests shorter than 10 minutes."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Gone(Exception):
    """The account vanished under us (swept by another replica, deleted by hand)."""


@dataclass
class _Account:
    """What this relay knows about one user's account."""

    user: str
    name: str
    uid: str = ""
    applied: str = ""  # fingerprint of the plan whose objects exist
    token: str = ""
    renew_at: datetime | None = None
    last_used: datetime | None = None
    touched_at: datetime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def forget(self) -> None:
        self.uid = self.applied = self.token = ""
        self.renew_at = self.touched_at = None


class JitAccounts:
    """The just-in-time service accounts of one relay replica; see the module docstring."""

    def __init__(
        self,
        kube: KubeObjects,
        planner: Planner,
        *,
        relay_id: str,
        emit: Emit,
        metrics: RelayMetrics,
        token_ttl: timedelta = timedelta(hours=1),
        idle: timedelta = timedelta(hours=8),
        sweep_interval: timedelta | None = None,
        touch_interval: timedelta = timedelta(minutes=1),
        active_users: Callable[[], Iterable[str]] = tuple,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if token_ttl < MIN_TOKEN_TTL:
            raise RelayError(f"token_ttl must be at least {MIN_TOKEN_TTL}")
        if idle <= timedelta(0):
            raise RelayError("idle must be positive")
        self.kube = kube
        self.planner = planner
        self.namespace = planner.namespace
        self.cluster = planner.cluster
        self.relay_id = relay_id
        self.emit = emit
        self.m = metrics
        self.token_ttl = token_ttl
        self.idle = idle
        default_sweep = min(max(idle / 4, timedelta(seconds=0.5)), timedelta(minutes=5))
        self.sweep_interval = sweep_interval or default_sweep
        self.touch_interval = min(touch_interval, idle / 4)
        self.active_users = active_users
        self.clock = clock
        self._accounts: dict[str, _Account] = {}
        self._namespace_ready = False
        self._namespace_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run the idle sweeper in the background."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="kubegate-relay-sweeper")

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            await cancel_and_wait(task)

    def invalidate(self, user: str) -> None:
        """Forget what we believe about `user`'s account (its token was refused): the next
        `token_for` checks the account, its bindings and asks for a new token."""
        account = self._accounts.get(user)
        if account is not None:
            account.forget()

    def known_users(self) -> set[str]:
        """Users this replica holds an account for."""
        return {u for u, a in self._accounts.items() if a.uid}

    # -- the request path --------------------------------------------------------------------

    async def token_for(self, user: str, *, cause: str = "") -> str:
        """A bearer token for `user`'s account with bindings matching the current plan.

        Raises `NoAccessError` when the plan is empty (the relay's policy grants nothing here)
        and `JitError` when the cluster refused or did not answer.
        """
        plan, fp = self.planner.current(user)
        if not plan.grant_ids:
            raise NoAccessError(user, self.cluster)
        account = self._accounts.get(user)
        if account is None:
            account = self._accounts[user] = _Account(user, service_account_name(user))
            self.m.accounts.set(len(self._accounts))
        now = self.clock()
        if self._usable(account, fp, now):
            account.last_used = now
            return account.token
        started = time.monotonic()
        async with account.lock:
            plan, fp = self.planner.current(user)  # may have changed while we waited
            if not plan.grant_ids:
                raise NoAccessError(user, self.cluster)
            try:
                await self._prepare(account, plan, fp, cause)
            except KubeApiError as exc:
                raise JitError(user, exc.action, str(exc), status=exc.status) from exc
            account.last_used = self.clock()
        self.m.provisioning_latency.observe(time.monotonic() - started)
        return account.token

    def _usable(self, account: _Account, fp: str, now: datetime) -> bool:
        return bool(
            account.uid
            and account.token
            and account.applied == fp
            and account.renew_at is not None
            and now < account.renew_at
            and account.touched_at is not None
            and now - account.touched_at < self.touch_interval
        )

    async def _prepare(self, account: _Account, plan: BindingPlan, fp: str, cause: str) -> None:
        """Everything `token_for` needs, under the account's lock; starts over once if the
        account disappears on the way."""
        for attempt in (1, 2):
            try:
                created = False
                if not account.uid:
                    created = await self._provision(account, plan)
                if account.applied != fp:
                    await self._apply(plan)
                    account.applied = fp
                if created:
                    await self._emit_provisioned(account, plan, cause)
                now = self.clock()
                if account.touched_at is None or now - account.touched_at >= self.touch_interval:
                    await self._touch(account, now)
                if account.renew_at is None or now >= account.renew_at or not account.token:
                    await self._new_token(account)
                return
            except _Gone:
                log.info(
                    "service account vanished; provisioning again",
                    extra={"user": account.user, "attempt": attempt},
                )
                account.forget()
        raise KubeApiError(
            f"provision ServiceAccount {self.namespace}/{account.name}",
            404,
            "NotFound",
            "the account keeps disappearing",
        )

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        async with self._namespace_lock:
            if self._namespace_ready:
                return
            if await self.kube.get("Namespace", self.namespace) is None:
                made = await self.kube.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": self.namespace, "labels": dict(MANAGED_BY)},
                    }
                )
                if made is not None:
                    log.info("namespace created", extra={"namespace": self.namespace})
            self._namespace_ready = True

    async def _provision(self, account: _Account, plan: BindingPlan) -> bool:
        """Make the ServiceAccount exist; True if this call created it."""
        await self._ensure_namespace()
        obj = copy.deepcopy(plan.service_account)
        now = self.clock()
        obj["metadata"]["annotations"][LAST_USED_ANNOTATION] = _iso(now)
        try:
            made = await self.kube.create(obj)
        except KubeApiError as exc:
            if exc.status == 404:  # the namespace went away
                self._namespace_ready = False
                self.m.provisioning.labels("create", "error").inc()
                raise _Gone from exc
            self.m.provisioning.labels("create", "error").inc()
            raise
        if made is not None:
            account.uid = made["metadata"]["uid"]
            account.touched_at = now
            self.m.provisioning.labels("create", "ok").inc()
            log.info(
                "service account created",
                extra={"user": account.user, "service_account": account.name},
            )
            return True
        found = await self.kube.get("ServiceAccount", account.name, self.namespace)
        if found is None:
            raise _Gone
        if not _has_labels(found, obj["metadata"]["labels"]):  # made by someone else: claim it
            meta = obj["metadata"]
            found = await self.kube.patch(
                "ServiceAccount",
                account.name,
                self.namespace,
                {"metadata": {"labels": meta["labels"], "annotations": meta["annotations"]}},
            )
        account.uid = found["metadata"]["uid"]
        self.m.provisioning.labels("existing", "ok").inc()
        return False

    async def _touch(self, account: _Account, now: datetime) -> None:
        patch = {"metadata": {"annotations": {LAST_USED_ANNOTATION: _iso(now)}}}
        try:
            await self.kube.patch("ServiceAccount", account.name, self.namespace, patch)
        except KubeApiError as exc:
            self.m.provisioning.labels("touch", "error").inc()
            if exc.status == 404:
                raise _Gone from exc
            raise
        account.touched_at = now
        self.m.provisioning.labels("touch", "ok").inc()

    async def _new_token(self, account: _Account) -> None:
        try:
            token, expires = await self.kube.token(
                account.name, self.namespace, seconds=int(self.token_ttl.total_seconds())
            )
        except KubeApiError as exc:
            self.m.provisioning.labels("token", "error").inc()
            if exc.status == 404:
                raise _Gone from exc
            raise
        now = self.clock()
        account.token = token
        account.renew_at = now + max(expires - now, timedelta(0)) * 0.8
        self.m.provisioning.labels("token", "ok").inc()

    # -- RBAC reconciliation -----------------------------------------------------------------

    async def _apply(self, plan: BindingPlan) -> None:
        """Make the cluster's roles and bindings for the plan's account match the plan."""
        try:
            for role in plan.cluster_roles:
                await self._ensure_role(role)
            owner = self.planner.owner(plan.user)
            selector = f"{OWNER_LABEL}={owner}"
            existing: dict[str, Object] = {}
            for kind in ("ClusterRoleBinding", "RoleBinding"):
                for obj in await self.kube.list(kind, label_selector=selector):
                    existing[_ref(obj)] = obj
            desired = {_ref(obj): obj for obj in (*plan.cluster_role_bindings, *plan.role_bindings)}
            for ref, want in desired.items():
                await self._ensure_binding(want, existing.get(ref))
            for ref, stale in existing.items():
                if ref not in desired:
                    meta = stale["metadata"]
                    await self.kube.delete(stale["kind"], meta["name"], meta.get("namespace"))
                    log.info("stale binding deleted", extra={"user": plan.user, "binding": ref})
        except KubeApiError:
            self.m.provisioning.labels("bindings", "error").inc()
            raise
        self.m.provisioning.labels("bindings", "ok").inc()

    async def _ensure_role(self, role: Object) -> None:
        name = role["metadata"]["name"]
        made = await self.kube.create(role)
        if made is None:
            current = await self.kube.get("ClusterRole", name)
            if current is None:
                made = await self.kube.create(role)
            elif _without_empty(current.get("rules")) != _without_empty(
                role["rules"]
            ) or not _has_labels(current, role["metadata"]["labels"]):
                update = copy.deepcopy(role)
                update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.kube.replace(update)

    async def _ensure_binding(self, want: Object, current: Object | None) -> None:
        meta = want["metadata"]
        if current is None:
            if await self.kube.create(want) is not None:
                return
            current = await self.kube.get(want["kind"], meta["name"], meta.get("namespace"))
            if current is None:
                await self.kube.create(want)
                return
        if _binding_matches(current, want):
            return
        if current.get("roleRef") != want["roleRef"]:  # roleRef is immutable: recreate
            await self.kube.delete(want["kind"], meta["name"], meta.get("namespace"))
            await self.kube.create(want)
            return
        update = copy.deepcopy(want)
        update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.kube.replace(update)

    # -- revocation ----------------------------------------------------------------------------

    async def reconcile(self, user: str) -> str | None:
        """Bring `user`'s objects in line with the current plan. Returns the removal reason
        when the plan is empty and the account was removed, else None."""
        plan, fp = self.planner.current(user)
        if not plan.grant_ids:
            reason = self.planner.removal_reason(user)
            removed = await self.remove(user, reason)
            return reason if removed else None
        account = self._accounts.get(user)
        name = service_account_name(user)
        if account is None or not account.uid:
            if await self.kube.get("ServiceAccount", name, self.namespace) is None:
                await self._delete_bindings(user)  # no account: nothing may be bound for it
                return None
        if account is None:
            account = self._accounts[user] = _Account(user, name)
        async with account.lock:
            if account.applied != fp:
                await self._apply(plan)
                account.applied = fp
        return None

    async def reconcile_users(self, users: frozenset[str] | None) -> dict[str, str]:
        """Reconcile `users` (None: everyone) who hold an account here or in the cluster.
        Returns {user: removal reason} for the accounts removed."""
        in_cluster = await self._accounts_in_cluster()
        candidates = set(in_cluster) | set(self._accounts)
        if users is not None:
            candidates &= users
        removed: dict[str, str] = {}
        for user in sorted(candidates):
            try:
                reason = await self.reconcile(user)
            except KubeApiError as exc:
                log.error("reconcile failed", extra={"user": user, "error": str(exc)})
                continue
            if reason is not None:
                removed[user] = reason
        return removed

    async def remove(self, user: str, reason: str, *, idle_since: datetime | None = None) -> bool:
        """Delete `user`'s account and bindings; True if this call deleted the account (and
        emitted `ServiceAccountRemoved`)."""
        account = self._accounts.get(user)
        lock = account.lock if account is not None else asyncio.Lock()
        name = service_account_name(user)
        async with lock:
            current = await self.kube.get("ServiceAccount", name, self.namespace)
            deleted = False
            uid = ""
            if current is not None:
                meta = current["metadata"]
                uid = meta["uid"]
                if idle_since is not None and _last_used(current) != idle_since:
                    return False  # used since the sweeper looked
                try:
                    deleted = await self.kube.delete(
                        "ServiceAccount",
                        name,
                        self.namespace,
                        uid=uid,
                        resource_version=meta["resourceVersion"] if idle_since else None,
                    )
                except KubeConflictError:
                    return False  # touched (or recreated) since we read it: not idle
            await self._delete_bindings(user)
            if account is not None:
                account.forget()
            if account is not None and not account.lock.locked():
                self._accounts.pop(user, None)
            self.m.accounts.set(len(self._accounts))
        if deleted:
            self.m.removals.labels(reason).inc()
            log.info(
                "service account removed",
                extra={"user": user, "service_account": name, "reason": reason},
            )
            await self._emit(
                events.ServiceAccountRemoved(
                    id=f"sa-{uid}-removed",
                    time=self.clock(),
                    actor=self.relay_id,
                    cluster=self.cluster,
                    user=user,
                    namespace=self.namespace,
                    name=name,
                    relay_id=self.relay_id,
                    reason=reason,  # type: ignore[arg-type]
                )
            )
        return deleted

    async def _delete_bindings(self, user: str) -> None:
        selector = f"{OWNER_LABEL}={self.planner.owner(user)}"
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            for obj in await self.kube.list(kind, label_selector=selector):
                meta = obj["metadata"]
                await self.kube.delete(kind, meta["name"], meta.get("namespace"))

    async def _accounts_in_cluster(self) -> dict[str, Object]:
        """kubegate's accounts in the namespace, by user."""
        found: dict[str, Object] = {}
        items = await self.kube.list(
            "ServiceAccount", label_selector=MANAGED_SELECTOR, namespace=self.namespace
        )
        for sa in items:
            user = (sa["metadata"].get("annotations") or {}).get(USER_ANNOTATION)
            if user and sa["metadata"]["name"] == service_account_name(user):
                found[user] = sa
        return found

    # -- idleness -----------------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Remove accounts idle longer than the idle period; returns their users."""
        now = self.clock()
        for user in set(self.active_users()):  # streams still open here count as use
            account = self._accounts.get(user)
            if account is not None and account.uid:
                account.last_used = now
                if account.touched_at is None or now - account.touched_at >= self.touch_interval:
                    with contextlib.suppress(_Gone, KubeApiError):
                        await self._touch(account, now)
        removed: list[str] = []
        for user, sa in (await self._accounts_in_cluster()).items():
            account = self._accounts.get(user)
            if account is not None and account.last_used and now - account.last_used < self.idle:
                continue
            last = _last_used(sa)
            if last is not None and now - last < self.idle:
                continue
            if await self.remove(user, "idle", idle_since=last):
                removed.append(user)
        for user, account in list(self._accounts.items()):  # forget tokens nobody uses
            idle_here = account.last_used is None or now - account.last_used >= self.idle
            if idle_here and not account.lock.locked():
                del self._accounts[user]
        self.m.accounts.set(len(self._accounts))
        await self._collect_roles(now)
        return removed

    async def _collect_roles(self, now: datetime) -> None:
        """Delete per-grant ClusterRoles no kubegate binding refers to any more (their grant
        was revoked or expired). A role younger than two sweeps is left alone: another
        replica may be about to bind it."""
        used: set[str] = set()
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            for binding in await self.kube.list(kind, label_selector=MANAGED_SELECTOR):
                used.add((binding.get("roleRef") or {}).get("name", ""))
        selector = f"{MANAGED_SELECTOR},{GRANT_LABEL}"
        grace = max(2 * self.sweep_interval, timedelta(seconds=30))
        for role in await self.kube.list("ClusterRole", label_selector=selector):
            meta = role["metadata"]
            created = _parse_time(meta.get("creationTimestamp"))
            if meta["name"] in used or created is None or now - created < grace:
                continue
            if await self.kube.delete("ClusterRole", meta["name"], uid=meta.get("uid")):
                log.info("role of an ended grant deleted", extra={"role": meta["name"]})

    async def _sweep_loop(self) -> None:
        interval = self.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.sweep()
            except KubeApiError as exc:
                self.m.sweeps.labels("error").inc()
                log.warning("idle sweep failed", extra={"error": str(exc)})
                continue
            self.m.sweeps.labels("ok").inc()
            if removed:
                log.info("idle accounts removed", extra={"users": removed})

    # -- events ---------------------------------------------------------------------------------

    async def _emit_provisioned(self, account: _Account, plan: BindingPlan, cause: str) -> None:
        await self._emit(
            events.ServiceAccountProvisioned(
                id=f"sa-{account.uid}-provisioned",
                time=self.clock(),
                actor=self.relay_id,
                cause=cause,
                cluster=self.cluster,
                user=account.user,
                namespace=self.namespace,
                name=account.name,
                relay_id=self.relay_id,
                bindings=plan.binding_names(),
            )
        )

    async def _emit(self, event: events.Event) -> None:
        try:
            await self.emit(event)
        except Exception:  # the log is unreachable: the cluster state is right regardless
            log.exception("could not record event", extra={"event": type(event).__name__})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _last_used(sa: Object) -> datetime | None:
    meta = sa["metadata"]
    found = _parse_time((meta.get("annotations") or {}).get(LAST_USED_ANNOTATION))
    return found or _parse_time(meta.get("creationTimestamp"))


def _ref(obj: Object) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{obj['kind']}/{ns}/{meta['name']}" if ns else f"{obj['kind']}/{meta['name']}"


def _has_labels(obj: Object, labels: dict[str, str]) -> bool:
    have = obj["metadata"].get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _without_empty(items: list[Object] | None) -> list[Object]:
    """API servers fill in defaults (a ServiceAccount subject's apiGroup ""): compare
    without empty fields."""
    return [{k: v for k, v in item.items() if v not in ("", None, [], {})} for item in items or ()]


def _binding_matches(current: Object, want: Object) -> bool:
    meta, wmeta = current["metadata"], want["metadata"]
    annotations = meta.get("annotations") or {}
    return (
        current.get("roleRef") == want["roleRef"]
        and _without_empty(current.get("subjects")) == _without_empty(want["subjects"])
        and _has_labels(current, wmeta["labels"])
        and annotations == wmeta["annotations"]
    )
