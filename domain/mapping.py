"""Mapping the control plane's aggregate events to stored records and back: catalog JSON.

eventsourcing's default mapper stores an event's attributes through its transcoder. This one
stores the carried catalog event exactly as `domain.codec.encode` writes it, so the log holds
the same JSON whoever wrote it, and any reader decodes it with `domain.codec.decode`. The
eventsourcing metadata (aggregate id, version, topic) travels beside the state (the JetStream
persistence module keeps it in message headers), and the stored record carries the catalog
event id as `msg_id`, which the persistence module uses as the JetStream message id.

No cipher or compressor: the point of this format is that auditors can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import (
    Cipher,
    Compressor,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic

from domain import codec
from domain.aggregates import ControlEvent
from domain.errors import MalformedEventError


@dataclass(frozen=True)
class CatalogStoredEvent(StoredEvent):
    """A stored record whose state is catalog JSON; `msg_id` is the catalog event id."""

    msg_id: str = ""


class CatalogMapper(Mapper[str]):
    """Maps `domain.aggregates.ControlEvent`s to catalog-JSON records and back."""

    def __init__(
        self,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        if compressor is not None or cipher is not None:
            raise ValueError("catalog events are stored as plain JSON: no cipher, no compressor")
        super().__init__(transcoder=transcoder or JSONTranscoder())

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if not isinstance(domain_event, ControlEvent):
            raise TypeError(f"{type(domain_event).__name__} is not a control-plane event")
        return CatalogStoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=codec.encode(domain_event.fact),
            msg_id=domain_event.fact.id,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        where = (
            f"{stored_event.originator_id} version {stored_event.originator_version} "
            f"({stored_event.topic})"
        )
        try:
            event_cls = resolve_topic(stored_event.topic)
            fact = codec.decode(stored_event.state)
        except MalformedEventError as exc:
            raise MapperDeserialisationError(f"{where}: {exc}") from exc
        except Exception as exc:  # an unresolvable topic
            raise MapperDeserialisationError(f"{where}: {exc}") from exc
        if not (isinstance(event_cls, type) and issubclass(event_cls, ControlEvent)):
            raise MapperDeserialisationError(f"{where}: not a control-plane event class")
        if not isinstance(fact, event_cls.FACT):
            raise MapperDeserialisationError(
                f"{where}: holds {getattr(fact, 'type', type(fact).__name__)}, "
                f"expected {event_cls.FACT.__name__} (a newer build wrote it?)"
            )
        return event_cls(
            originator_id=str(stored_event.originator_id),
            originator_version=stored_event.originator_version,
            timestamp=fact.time,
            fact=fact,
        )
