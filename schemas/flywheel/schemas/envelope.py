"""The envelope every Flywheel event carries, and how one event causes the next."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID, SafeUUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

NAME_MAX = 200
"""The longest name of a dataset, model, version, run or variant: names, not documents."""

Name = Annotated[str, Field(max_length=NAME_MAX)]
"""A name or version another service looks up; a 10,000-character one is refused when parsed."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# Seeded from the OS's entropy, again in a forked child: ids as unique as uuid4's, without uuid4's system call
# for each (two per event, on paths that make an event for every record). Ids name events; they guard nothing.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_id() -> UUID:
    """A random (version 4) UUID: an event's id, or a new loop's correlation id.

    >>> new_id().version, new_id() != new_id(), str(new_id())[14]
    (4, True, '4')
    """
    return _uuid(_ids.getrandbits(128), 4)


def name_id(namespace: UUID, name: str) -> UUID:
    """``uuid.uuid5(namespace, name)``, at half its cost: the id of what an event derives, the same on every
    redelivery, on paths that derive one for every record.

    >>> import uuid
    >>> all(name_id(ns, n) == uuid.uuid5(ns, n) for ns in (uuid.NAMESPACE_URL, new_id()) for n in ("", "a/1", "é"))
    True
    """
    return _uuid(int.from_bytes(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16]), 5)


_VARIANT_AND_VERSION = ~((0xC000 << 48) | (0xF000 << 64))
# looked up once, not per id: an enum member is reached through a descriptor, and UUID's slots are set through
# their own descriptors (UUID.__setattr__ refuses every write)
_UNKNOWN_SAFETY = SafeUUID.unknown
_SET_INT, _SET_SAFETY = UUID.__dict__["int"].__set__, UUID.__dict__["is_safe"].__set__


def _uuid(bits: int, version: int) -> UUID:
    """The RFC 4122 UUID of ``version`` from 128 bits, as ``UUID(int=bits, version=version)`` makes it, without
    ``UUID.__init__``'s checks of each way to give one (the costliest part of an id, two or three per event).

    >>> import uuid
    >>> bits = 2**128 - 1
    >>> [_uuid(bits, v) == uuid.UUID(int=bits, version=v) for v in (4, 5)], _uuid(bits, 4).is_safe
    ([True, True], <SafeUUID.unknown: None>)
    """
    made = object.__new__(UUID)
    _SET_INT(made, (bits & _VARIANT_AND_VERSION) | (0x8000 << 48) | (version << 76))
    _SET_SAFETY(made, _UNKNOWN_SAFETY)
    return made


class Event(BaseModel):
    """Base of every event on a Flywheel topic.

    ``event_type`` is the class name and ``schema_version`` its ``MAJOR.MINOR``;
    both are filled in by the subclass, so a producer only sets the payload,
    its own name, and the event that caused it (``caused_by``).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    SCHEMA_VERSION: ClassVar[str] = "1.0"

    event_id: UUID = Field(default_factory=new_id, description="Unique id; consumers dedup on it.")
    event_type: str = Field(default="", description="The event's class name.")
    schema_version: str = Field(default="", description="MAJOR.MINOR of the event's schema.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="When it happened (UTC).")
    producer: str = Field(default="unknown", description="The service or client that produced it.")
    correlation_id: UUID = Field(
        default_factory=new_id, description="The loop it belongs to; shared along a causation chain."
    )
    causation_id: UUID | None = Field(default=None, description="The event that caused this one.")

    @model_validator(mode="before")
    @classmethod
    def _stamp_type_and_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("event_type", cls.__name__)
            data["event_type"] = data["event_type"] or cls.__name__
            data["schema_version"] = data.get("schema_version") or cls.SCHEMA_VERSION
        return data

    @model_validator(mode="after")
    def _check_type(self) -> Self:
        if self.event_type != type(self).__name__:
            raise ValueError(f"event_type {self.event_type!r} is not {type(self).__name__!r}")
        major = self.schema_version.split(".")[0]
        if major != self.SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema_version {self.schema_version} is not major {self.SCHEMA_VERSION}")
        return self

    def caused(self) -> dict[str, Any]:
        """Envelope fields for an event this one causes: same loop, this event as the cause."""
        return {"correlation_id": self.correlation_id, "causation_id": self.event_id}

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
