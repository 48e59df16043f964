"""One reliability test's outcome: wait for the service at work, count what came out, judge it."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from mlflow import MlflowClient

from flywheel.common.settings import KafkaSettings, ObjectStoreSettings
from tests.reliability.traffic import Stream, Tally, caught_up, drain, report
from tests.support.kafka import TopicReader


def tag(what: str) -> str:
    return f"rel-{what}-{uuid.uuid4().hex[:6]}"


async def first_output(stream: Stream, topic: str, field: str, timeout: float = 60) -> None:
    """Wait until the stream's first message is out on ``topic``: the service is at work."""
    await stream.readers[topic].collect(lambda seen: len(seen) >= 1, timeout=timeout, where=stream.mine(field))


async def counted(stream: Stream, store: ObjectStoreSettings, kafka: KafkaSettings) -> tuple[list, dict[str, int]]:
    """Count everything the stream caused, and how far behind each consumer group still is."""
    await stream.settle()
    sealed = await stream.sealed(store)
    behind = await caught_up(kafka, timeout=60)
    return [*stream.tallies(), sealed], behind


async def outcome(
    stream: Stream, store: ObjectStoreSettings, kafka: KafkaSettings, test: str
) -> tuple[list[Tally], dict[str, int], str]:
    """Count, and report the counts under the test's title."""
    lines, behind = await counted(stream, store, kafka)
    text = report(test, *lines, f"consumer lag left: {behind or 'none'}")
    return [t for t in lines if isinstance(t, Tally)], behind, text


def assert_exact(tallies: list[Tally], behind: dict[str, int], text: str) -> None:
    wrong = [t for t in tallies if not t.exact or t.dead_lettered]
    assert not wrong, f"lost, doubled or dead-lettered:\n{text}\ndoubled ids: {[t.doubled[:5] for t in wrong]}"
    assert not behind, f"consumers not caught up: {behind}\n{text}"


async def wait_for_stage(http: httpx.AsyncClient, name: str, done, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = (await http.get("/runs", params={"model_name": name})).json()
        if runs and done(runs[0]):
            return runs[0]["stage"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no run of {name} reached the stage wanted in {timeout} s: {runs}")


async def run_outcomes(completed: TopicReader, failed: TopicReader, name: str, timeout: float) -> list[dict]:
    """The completed and failed events of a model's runs: wait for one, then a while for any second."""
    mine = lambda b: b["model_name"] == name  # noqa: E731
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (completed.seen or failed.seen):
        await drain(completed, lambda seen: len(seen) >= 1, 1, mine)
        await drain(failed, lambda seen: len(seen) >= 1, 1, mine)
    await asyncio.sleep(5)  # a second outcome (a run done twice) would arrive now
    await drain(completed, lambda _: False, 0.5, mine)
    await drain(failed, lambda _: False, 0.5, mine)
    return [*completed.seen, *failed.seen]


def trigger_of(event: dict) -> str | None:
    return (event.get("lineage") or {}).get("trigger_event_id") or event.get("causation_id")


def running_mlflow_runs(tracking: MlflowClient, name: str) -> list[str]:
    experiment = tracking.get_experiment_by_name(f"flywheel/{name}")
    if experiment is None:
        return []
    return [r.info.run_id for r in tracking.search_runs([experiment.experiment_id]) if r.info.status == "RUNNING"]
