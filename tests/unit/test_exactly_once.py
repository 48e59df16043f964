"""A batch's effects applied once, published together, and marked done only as far as they were written."""

from __future__ import annotations

import pytest

import flywheel.common.kafka as kafka
from flywheel.common.kafka import ExactlyOnce, PublishFailed
from flywheel.schemas import AlertRaised, Event


def alert(n: int) -> AlertRaised:
    return AlertRaised(producer="t", severity="info", kind="k", message=f"m{n}", dedup_key=f"d{n}")


async def test_a_batch_partly_written_is_done_up_to_its_first_unwritten_event_and_republished_from_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    once = ExactlyOnce()
    causes = [alert(i) for i in range(4)]
    applied = [
        (cause, await once.apply(cause, lambda cause=cause: [alert(10 + int(cause.message[1:]))])) for cause in causes
    ]
    sent: list[list[Event]] = []

    async def second_fails(broker: object, events: list[Event]) -> None:
        sent.append(list(events))
        if len(sent) == 1:  # the second cause's event was not written, the later ones were
            raise PublishFailed([events[1]], RuntimeError("expired"))

    monkeypatch.setattr(kafka, "publish_events", second_fails)
    with pytest.raises(PublishFailed):
        await once.publish_caused(None, applied)  # type: ignore[arg-type]
    assert [once.is_done(cause) for cause in causes] == [True, False, False, False]
    again = [(cause, await once.apply(cause, lambda: pytest.fail("applied twice"))) for cause in causes]
    await once.publish_caused(None, [(c, caused) for c, caused in again if caused is not None])  # type: ignore[arg-type]
    assert sent[1] == sent[0][1:]  # the same events, in their order, from the first unwritten on
    assert all(once.is_done(cause) for cause in causes)
