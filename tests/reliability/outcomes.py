"""One reliability test's outcome: wait for the service at work, count what came out, judge it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from mlflow import MlflowClient

from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import configure_mlflow
from flywheel.schemas import MODELS_APPROVED, MODELS_REJECTED, TRAINING_COMPLETED, TRAINING_FAILED
from tests.integration.test_training_runs import agrawal_rows, request_training, write_version
from tests.reliability.traffic import FAST, Stream, Tally, caught_up, drain, report, tally, unfinished_runs
from tests.support import stack
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


Fault = Callable[[Stream, str], Awaitable[str]]  # (stream, the run's stage) -> what was done


async def train_through(
    kafka: KafkaSettings, store: ObjectStoreSettings, mlflow: MlflowSettings, model: str, what: str, fault: Fault
) -> tuple[list[Tally], dict[str, int], str, list[dict]]:
    """A training run of a model of its own, a fault while it runs (with the stream's second half),
    then every count: the stream's, the run's outcomes and gate decisions, runs left open.

    Returns the tallies, the consumer lag left, their text, and the run's outcome events.
    """
    name = tag(what)
    version = write_version(store, agrawal_rows(1200, function=0, seed=len(what)))
    tracking = configure_mlflow(mlflow, store)
    bootstrap = kafka.bootstrap_servers
    async with (
        Stream(kafka, name, model) as stream,
        TopicReader(bootstrap, TRAINING_COMPLETED.name) as completed,
        TopicReader(bootstrap, TRAINING_FAILED.name) as failed,
        TopicReader(bootstrap, MODELS_APPROVED.name) as approved,
        TopicReader(bootstrap, MODELS_REJECTED.name) as rejected,
        httpx.AsyncClient(base_url=stack.service_url("training"), timeout=10) as http,
    ):
        await stream.send(0)
        request_id = await request_training(stack.service_url("training"), name, version, params=FAST, timeout=60)
        stage = await wait_for_stage(http, name, lambda run: run["status"] == "running")
        title = await fault(stream, stage)
        ended = await run_outcomes(completed, failed, name, timeout=150)
        mine = lambda b: b.get("model_name") == name  # noqa: E731
        if completed.seen:
            await drain(approved, lambda seen: len(seen) >= 1, 30, mine)
            await drain(rejected, lambda _: False, 1, mine)
        lines, behind = await counted(stream, store, kafka)
        open_runs = await unfinished_runs(http, {name}, timeout=10)
    runs = tally("training outcomes (request)", 1, ended, lambda e: trigger_of(e) or request_id)
    decisions = tally(
        "gate decisions (run id)", len(completed.seen), [*approved.seen, *rejected.seen], lambda e: e["run_id"]
    )
    left_running = running_mlflow_runs(tracking, name)
    text = report(
        title,
        *lines,
        runs,
        decisions,
        f"run outcomes: {[(e['event_type'], e.get('reason', '')[:80]) for e in ended]}",
        f"runs open in the training service: {len(open_runs)}; MLflow runs left RUNNING: {len(left_running)}",
        f"consumer lag left: {behind or 'none'}",
    )
    tallies = [t for t in lines if isinstance(t, Tally)]
    assert_exact([*tallies, runs, decisions], behind, text)
    assert not open_runs and not left_running, f"open runs {open_runs}, MLflow RUNNING {left_running}\n{text}"
    return tallies, behind, text, ended
