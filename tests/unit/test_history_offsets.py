"""Reading a group's committed offsets on a cluster that has just started."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from flywheel.common import history


class NoCoordinatorYet:
    """An admin client whose cluster has no group coordinator for its first ``refusals`` asks."""

    asked = 0
    closed = 0
    refusals = 2
    refusal: type[Exception] = GroupCoordinatorNotAvailableError

    def __init__(self, **options) -> None:
        pass

    async def start(self) -> None:
        pass

    async def list_consumer_group_offsets(self, group_id: str):
        type(self).asked += 1
        if type(self).asked <= self.refusals:
            raise self.refusal(f"Unable to get coordinator id for {group_id}")
        return {TopicPartition("t", 0): OffsetAndMetadata(7, ""), TopicPartition("other", 0): OffsetAndMetadata(3, "")}

    async def close(self) -> None:
        type(self).closed += 1


@pytest.fixture
def admin(monkeypatch):
    monkeypatch.setattr(history, "AIOKafkaAdminClient", NoCoordinatorYet)
    monkeypatch.setattr(history.asyncio, "sleep", _no_wait)
    NoCoordinatorYet.asked = NoCoordinatorYet.closed = 0
    return NoCoordinatorYet


async def _no_wait(seconds: float) -> None:
    return None


async def test_a_coordinator_not_there_yet_is_asked_again_and_each_client_is_closed(admin):
    assert await history.committed_offsets("127.0.0.1:1", "g", "t") == {0: 7}
    assert admin.asked == 3 and admin.closed == 3


async def test_past_its_wait_the_refusal_is_raised(admin, monkeypatch):
    monkeypatch.setattr(admin, "refusals", 10**6)
    with pytest.raises(GroupCoordinatorNotAvailableError):
        await history.committed_offsets("127.0.0.1:1", "g", "t", wait_s=0.0)


async def test_a_refusal_that_asking_again_cannot_mend_is_raised_at_once(admin, monkeypatch):
    monkeypatch.setattr(admin, "refusal", GroupAuthorizationFailedError)
    with pytest.raises(GroupAuthorizationFailedError):
        await history.committed_offsets("127.0.0.1:1", "g", "t")
    assert admin.asked == 1
