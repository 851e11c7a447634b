"""The control plane's write model: eventsourcing aggregates whose history is catalog events.

Every aggregate event here carries exactly one catalog event (`fact`, from `domain.events`),
and there is one eventsourcing event class per catalog event type (`ControlEvents.<Type>`), so
what the log stores for an aggregate is the catalog's own JSON (see `domain.mapping`) and
auditors and projections read one format. An aggregate's id is `<family>:<id>` (`user:alice`),
which the JetStream persistence module stores on the catalog's subject (`kg.evt.user.alice`).

Aggregates hold state and apply facts; they make no decisions (the command layer in
`domain.control` checks the rules) and read no clock (a fact's time is its timestamp).
Each remembers the command ids (`cause`) that changed it, so a command seen again is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

from eventsourcing.domain import BaseAggregate, CanMutateAggregate, OriginatorVersionError

from domain import events

TAggregate = TypeVar("TAggregate", bound="ControlAggregate")

AGGREGATES: dict[str, type[ControlAggregate]] = {}
"""Family -> aggregate class."""

FACT_CLASSES: dict[type[events.Event], type[ControlEvent]] = {}
"""Catalog event type -> the eventsourcing event class that carries it."""


def aggregate_id(family: str, key: str) -> str:
    """The eventsourcing id of an aggregate: `family:key`."""
    return f"{family}:{key}"


def fact_aggregate_id(fact: events.Event) -> str:
    return aggregate_id(*fact.key())


@dataclass(frozen=True)
class ControlEvent(CanMutateAggregate[str]):
    """An aggregate event carrying one catalog event. It can start an aggregate (the first
    event of its family's aggregate, at version 1) or change one."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    fact: events.Event

    FACT: ClassVar[type[events.Event]] = events.Event

    def mutate(self, aggregate: Any) -> Any:
        if aggregate is not None:
            return super().mutate(aggregate)
        if self.originator_version != ControlAggregate.INITIAL_VERSION:
            raise OriginatorVersionError(self.originator_version, ControlAggregate.INITIAL_VERSION)
        cls = AGGREGATES[self.fact.FAMILY]
        started = cls.__new__(cls)
        started.__base_init__(self.originator_id, self.originator_version, self.timestamp)
        started.__init__()  # type: ignore[misc]
        self.apply(started)
        return started

    def apply(self, aggregate: Any) -> None:
        aggregate.when(self.fact)


class ControlEvents:
    """Namespace of the generated event classes, one per catalog event the aggregates apply:
    `ControlEvents.UserRegistered` carries a `domain.events.UserRegistered`. Their topics
    (`domain.aggregates:ControlEvents.UserRegistered`) are what eventsourcing records."""


def _define_event_class(fact_cls: type[events.Event]) -> type[ControlEvent]:
    name = fact_cls.__name__
    event_cls = type(
        name,
        (ControlEvent,),
        {"FACT": fact_cls, "__module__": __name__, "__qualname__": f"ControlEvents.{name}"},
    )
    setattr(ControlEvents, name, event_cls)
    return event_cls


class ControlAggregate(BaseAggregate[str]):
    """Base of the control plane's aggregates: applies facts, records new ones."""

    FAMILY = ""
    FACTS: ClassVar[tuple[type[events.Event], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.FAMILY:
            AGGREGATES[cls.FAMILY] = cls
            for fact_cls in cls.FACTS:
                if fact_cls.FAMILY != cls.FAMILY:
                    raise TypeError(f"{fact_cls.__name__} is not of family {cls.FAMILY}")
                FACT_CLASSES[fact_cls] = _define_event_class(fact_cls)

    def __init__(self) -> None:
        self.causes: set[str] = set()

    @property
    def key(self) -> str:
        """The id within the family (`alice` for `user:alice`)."""
        return self.id.partition(":")[2]

    @classmethod
    def start(cls, fact: events.Event) -> Self:
        """A new aggregate whose first (pending) event carries `fact`."""
        event = _event_class(fact)(
            originator_id=fact_aggregate_id(fact),
            originator_version=cls.INITIAL_VERSION,
            timestamp=fact.time,
            fact=fact,
        )
        started = event.mutate(None)
        if not isinstance(started, cls):
            raise TypeError(f"{type(fact).__name__} does not start a {cls.__name__}")
        started.pending_events.append(event)
        return started

    def record(self, fact: events.Event) -> None:
        """Apply `fact` as this aggregate's next (pending) event."""
        if fact_aggregate_id(fact) != self.id:
            raise ValueError(
                f"{type(fact).__name__} for {fact_aggregate_id(fact)} is not {self.id}"
            )
        self.trigger_event(_event_class(fact), fact=fact, timestamp=fact.time)

    def when(self, fact: events.Event) -> None:
        if fact.cause:
            self.causes.add(fact.cause)
        self.apply_fact(fact)

    def apply_fact(self, fact: events.Event) -> None:
        raise NotImplementedError


def _event_class(fact: events.Event) -> type[ControlEvent]:
    try:
        return FACT_CLASSES[type(fact)]
    except KeyError:
        raise TypeError(f"no aggregate applies {type(fact).__name__}") from None


class User(ControlAggregate):
    FAMILY = "user"
    FACTS = (
        events.UserRegistered,
        events.UserDisabled,
        events.UserEnabled,
        events.UserAccessRevoked,
        events.IdpGroupsSynced,
    )

    def __init__(self) -> None:
        super().__init__()
        self.display_name = ""
        self.email = ""
        self.source = "local"
        self.issuer = ""
        self.oidc_subject = ""
        self.enabled = True
        self.revoked = False
        self.revoked_at: datetime | None = None
        self.idp_groups: dict[str, tuple[str, ...]] = {}

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.UserRegistered():
                self.display_name = fact.display_name
                self.email = fact.email
                self.source = fact.source
                self.issuer = fact.issuer
                self.oidc_subject = fact.oidc_subject
            case events.UserDisabled():
                self.enabled = False
            case events.UserEnabled():
                self.enabled = True
                self.revoked = False
            case events.UserAccessRevoked():
                self.revoked = True
                self.revoked_at = fact.time
            case events.IdpGroupsSynced():
                self.idp_groups[fact.issuer] = fact.groups


class Credential(ControlAggregate):
    """A local user's password hash, apart from the user so hashes stay in their own subjects."""

    FAMILY = "credential"
    FACTS = (events.PasswordSet,)

    def __init__(self) -> None:
        super().__init__()
        self.password_hash = ""

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.PasswordSet():
                self.password_hash = fact.password_hash


class Settings(ControlAggregate):
    """Fleet-wide settings (one aggregate, key `fleet`): the current values by key."""

    FAMILY = "settings"
    FACTS = (events.SettingsChanged,)

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str | int | float | bool] = {}

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.SettingsChanged():
                self.values.update(fact.settings)


class Group(ControlAggregate):
    FAMILY = "group"
    FACTS = (events.GroupCreated, events.GroupDeleted, events.MemberAdded, events.MemberRemoved)

    def __init__(self) -> None:
        super().__init__()
        self.description = ""
        self.deleted = False
        self.members: set[str] = set()

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.GroupCreated():
                self.description = fact.description
                self.deleted = False
                self.members = set()
            case events.GroupDeleted():
                self.deleted = True
                self.members = set()
            case events.MemberAdded():
                self.members.add(fact.user)
            case events.MemberRemoved():
                self.members.discard(fact.user)


class Cluster(ControlAggregate):
    """A cluster as the control plane registers it (relays' own RelayConnected and
    RelayDisconnected events share its subject but are not part of this aggregate)."""

    FAMILY = "cluster"
    FACTS = (events.ClusterRegistered, events.ClusterLabelsSet, events.ClusterRemoved)

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self.display_name = ""
        self.removed = False

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.ClusterRegistered():
                self.labels = dict(fact.labels)
                self.display_name = fact.display_name
                self.removed = False
            case events.ClusterLabelsSet():
                self.labels = dict(fact.labels)
            case events.ClusterRemoved():
                self.removed = True


class Grant(ControlAggregate):
    FAMILY = "grant"
    FACTS = (events.GrantIssued, events.GrantRevoked, events.GrantExpired)

    def __init__(self) -> None:
        super().__init__()
        self.issued: events.GrantIssued | None = None
        self.revoked = False
        self.expired = False

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.GrantIssued():
                self.issued = fact
            case events.GrantRevoked():
                self.revoked = True
            case events.GrantExpired():
                self.expired = True


class Switch(ControlAggregate):
    """The kubectl switches of one scope and target (`switch:global:`, `switch:user:alice`)."""

    FAMILY = "switch"
    FACTS = (
        events.KubectlDisabled,
        events.KubectlEnabled,
        events.BrowserOnlySet,
        events.ConsoleSessionRequiredSet,
    )

    def __init__(self) -> None:
        super().__init__()
        self.kubectl_disabled = False
        self.browser_only = False
        self.console_session_required = False

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.KubectlDisabled():
                self.kubectl_disabled = True
            case events.KubectlEnabled():
                self.kubectl_disabled = False
            case events.BrowserOnlySet():
                self.browser_only = fact.enabled
            case events.ConsoleSessionRequiredSet():
                self.console_session_required = fact.enabled


class BreakGlass(ControlAggregate):
    FAMILY = "breakglass"
    FACTS = (
        events.BreakGlassRequested,
        events.BreakGlassApproved,
        events.BreakGlassDenied,
    )

    def __init__(self) -> None:
        super().__init__()
        self.request: events.BreakGlassRequested | None = None
        self.status = "requested"
        self.approver = ""
        self.grant_id = ""

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.BreakGlassRequested():
                self.request = fact
            case events.BreakGlassApproved():
                self.status = "approved"
                self.approver = fact.approver
                self.grant_id = fact.grant_id
            case events.BreakGlassDenied():
                self.status = "denied"
                self.approver = fact.approver


class ConsoleSession(ControlAggregate):
    FAMILY = "session"
    FACTS = (
        events.ConsoleSessionStarted,
        events.ConsoleSessionTouched,
        events.ConsoleSessionEnded,
    )

    def __init__(self) -> None:
        super().__init__()
        self.user = ""
        self.expires_at: datetime | None = None
        self.idle_timeout_s = 0
        self.last_active: datetime | None = None
        self.ended = ""

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.ConsoleSessionStarted():
                self.user = fact.user
                self.expires_at = fact.expires_at
                self.idle_timeout_s = fact.idle_timeout_s
                self.last_active = fact.time
            case events.ConsoleSessionTouched():
                self.last_active = fact.time
            case events.ConsoleSessionEnded():
                self.ended = fact.reason


class Certificate(ControlAggregate):
    FAMILY = "cert"
    FACTS = (events.CertificateIssued, events.CertificateRevoked)

    def __init__(self) -> None:
        super().__init__()
        self.user = ""
        self.not_after: datetime | None = None
        self.revoked = False

    def apply_fact(self, fact: events.Event) -> None:
        match fact:
            case events.CertificateIssued():
                self.user = fact.user
                self.not_after = fact.not_after
            case events.CertificateRevoked():
                self.revoked = True
