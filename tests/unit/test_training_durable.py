"""Durable training with fakes: a request is committed only when its run has ended, exactly once.

The intake, coalescer and orchestrator are the real ones; Kafka is replaced by what the intake
sees of it (partitions, offsets, commits) and the fit by a function that fails as told.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from river.datasets import synth

from flywheel.schemas import DatasetManifest, Event, Lineage, ModelTrained, TrainingFailed, TrainModel
from flywheel.training.coalesce import Coalescer
from flywheel.training.ended import EndedRequests, ended_request_ids
from flywheel.training.intake import Intake
from flywheel.training.orchestrator import Orchestrator
from flywheel.training.runner import RunContext, train
from flywheel.training.runs import RunBook

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
DEBOUNCE_S = 0.02


def request(model: str = "m", **fields: Any) -> TrainModel:
    return TrainModel(model_name=model, dataset="loans", producer="test", **fields)


def trained(request: TrainModel, merged: list[TrainModel]) -> ModelTrained:
    return ModelTrained(
        model_name=request.model_name,
        run_id="run",
        model_uri="models:/m/1",
        metrics={"accuracy": 0.9},
        lineage=Lineage(dataset="loans", dataset_version="v1", code_version="c", model_spec="model", seed=1),
        duration_s=0.0,
        merged_requests=len(merged),
        request_ids=[str(r.event_id) for r in merged],
        producer="training",
        **request.caused(),
    )


class Fit:
    """A fit that raises each of ``failures`` in turn, then trains (in the worker thread, as the real one)."""

    def __init__(self, *failures: Exception, seconds: float = 0.0) -> None:
        self.failures, self.seconds, self.calls = list(failures), seconds, 0

    def __call__(self, ctx, request, merged, run_label, progress, versions=None) -> ModelTrained:
        self.calls += 1
        if self.seconds:
            import time

            time.sleep(self.seconds)
        if self.failures:
            raise self.failures.pop(0)
        return trained(request, merged)


class Outbox:
    """The outcome topics: what was published; the first ``failures`` publishes fail."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[Event] = []
        self.failures = failures

    async def __call__(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.events.append(event)


class OutcomeLog(EndedRequests):
    """The ended requests as a (re)started process reads them back from the outcome topics."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox

    async def catch_up(self) -> int:
        for event in self.outbox.events:
            self.add(ended_request_ids(event))
        return len(self.outbox.events)


class Replica:
    """One training process: intake, coalescer, orchestrator; its commits recorded per partition."""

    def __init__(
        self,
        fit: Any,
        outbox: Outbox,
        ended: EndedRequests,
        *,
        ctx: RunContext | None = None,
        handover_timeout_s: float = 5.0,
    ) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.runs = RunBook()
        self.orchestrator = Orchestrator(ctx or context(), self.pool, outbox, attempts=3, backoff_s=0.01, train=fit)
        self.coalescer = Coalescer(DEBOUNCE_S, self.orchestrator, self.runs.add)
        self.intake = Intake(self.coalescer, ended, handover_timeout_s=handover_timeout_s)
        self.orchestrator.claims = self.intake
        self.commits: dict[int, int] = {}
        self.intake.commit = self._commit

    async def _commit(self, points: dict[int, int]) -> None:
        self.commits.update(points)

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait until every run this replica queued has finished."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.coalescer._tasks:
            assert asyncio.get_running_loop().time() < deadline, "runs did not finish"
            await asyncio.sleep(0.01)


def context(**fields: Any) -> RunContext:
    defaults: dict[str, Any] = {"catalog": None, "mlflow": None, "datasets_dir": DATASETS, "code_version": "test"}
    return RunContext(**{**defaults, **fields})


def outcomes_for(outbox: Outbox, req: TrainModel) -> list[Event]:
    return [e for e in outbox.events if str(req.event_id) in e.request_ids]


async def test_a_request_is_committed_only_after_its_run_has_ended():
    outbox, ended = Outbox(), EndedRequests()
    replica = Replica(Fit(seconds=0.2), outbox, ended)
    await replica.intake.assigned({0})
    req = request()
    await replica.intake.take(req, 0, 41)
    await asyncio.sleep(DEBOUNCE_S + 0.1)  # running: published nothing, committed nothing past it
    assert outbox.events == [] and replica.commits.get(0, 0) <= 41
    await replica.settled()
    [outcome] = outbox.events
    assert isinstance(outcome, ModelTrained) and outcome.request_ids == [str(req.event_id)]
    assert replica.commits[0] == 42


async def test_a_transient_failure_is_retried_and_the_run_ends_once():
    outbox, fit = Outbox(), Fit(ConnectionError("MLflow away"))
    replica = Replica(fit, outbox, EndedRequests())
    await replica.intake.assigned({0})
    req = request()
    await replica.intake.take(req, 0, 0)
    await replica.settled()
    assert fit.calls == 2
    assert [type(e) for e in outbox.events] == [ModelTrained]
    assert replica.commits[0] == 1


async def test_a_transient_publish_failure_is_retried_and_the_outcome_published_once():
    outbox = Outbox(failures=2)
    replica = Replica(Fit(), outbox, EndedRequests())
    await replica.intake.assigned({0})
    req = request()
    await replica.intake.take(req, 0, 0)
    await replica.settled()
    assert len(outcomes_for(outbox, req)) == 1 and replica.commits[0] == 1


async def test_a_permanent_failure_ends_in_training_failed_with_the_reason():
    outbox, fit = Outbox(), Fit(*[ConnectionError("MLflow away")] * 3)
    replica = Replica(fit, outbox, EndedRequests())
    await replica.intake.assigned({0})
    req = request()
    await replica.intake.take(req, 0, 0)
    await replica.settled()
    [failed] = outbox.events
    assert isinstance(failed, TrainingFailed) and failed.causation_id == req.event_id
    assert failed.reason == "ConnectionError: MLflow away (after 3 attempts)"
    assert failed.request_ids == [str(req.event_id)] and replica.commits[0] == 1
    assert replica.runs.list()[0].status == "failed"


def loans(n: int = 400) -> pd.DataFrame:
    stream = synth.Agrawal(classification_function=0, seed=3)
    return pd.DataFrame([{**x, "approved": int(y)} for x, y in stream.take(n)])


class Catalog:
    """One in-memory dataset version of ``loans``."""

    def __init__(self) -> None:
        self.frame = loans()

    def manifests(self, dataset: str) -> list[DatasetManifest]:
        rows = len(self.frame)
        return [DatasetManifest(dataset=dataset, version="v1", content_hash="h", row_count=rows, columns={}, uri="")]

    def load(self, dataset: str, version: str) -> pd.DataFrame:
        return self.frame


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A real MLflow tracking store in a temporary SQLite file."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(previous)


async def test_bad_params_end_in_training_failed_with_the_reason_and_the_mlflow_run_failed(tracking):
    outbox = Outbox()
    ctx = context(catalog=Catalog(), mlflow=tracking, experiment_prefix="unit")
    replica = Replica(train, outbox, EndedRequests(), ctx=ctx)
    await replica.intake.assigned({0})
    req = request("bad-params", params={"foo": 1})
    await replica.intake.take(req, 0, 7)
    await replica.settled(timeout=60)
    [failed] = outbox.events
    assert isinstance(failed, TrainingFailed) and "TypeError" in failed.reason and "'foo'" in failed.reason
    assert failed.request_ids == [str(req.event_id)] and failed.causation_id == req.event_id
    assert replica.commits[0] == 8
    run = tracking.get_run(failed.run_id)
    assert run.info.status == "FAILED" and "foo" in run.data.tags["flywheel.failure_reason"]


async def test_a_burst_for_one_model_is_one_run_that_ends_every_request_of_it():
    outbox = Outbox()
    replica = Replica(Fit(), outbox, EndedRequests())
    await replica.intake.assigned({0, 1})
    burst = [request() for _ in range(20)]
    for offset, req in enumerate(burst):
        await replica.intake.take(req, 0, offset)
    await replica.intake.take(burst[3], 0, 20)  # a duplicate: settled with its original
    other = request("other")
    await replica.intake.take(other, 1, 0)
    await replica.settled()
    [mine] = [e for e in outbox.events if e.model_name == "m"]
    assert mine.request_ids == [str(r.event_id) for r in burst] and mine.merged_requests == 20
    assert len(outbox.events) == 2 and replica.commits == {0: 21, 1: 1}


async def test_after_a_crash_open_requests_run_once_and_ended_ones_do_not_run_again():
    outbox = Outbox()  # the outcome topics: they outlive the process
    first = Replica(Fit(), outbox, OutcomeLog(outbox))
    await first.intake.assigned({0})
    done, queued = request("done"), request("queued")
    await first.intake.take(done, 0, 0)
    await first.settled()  # "done" ended and its outcome is published
    first.coalescer.debounce_s = 10.0
    await first.intake.take(queued, 0, 1)
    for task in list(first.coalescer._tasks):  # the process dies: "queued" never runs
        task.cancel()
    assert len(outcomes_for(outbox, done)) == 1 and outcomes_for(outbox, queued) == []

    # Say the commit of "done" was lost too: the restarted process reads both again.
    second = Replica(Fit(), outbox, OutcomeLog(outbox))
    await second.intake.assigned({0})
    for offset, req in enumerate([done, queued]):
        await second.intake.take(req, 0, offset)
    await second.settled()
    assert len(outcomes_for(outbox, done)) == 1 and len(outcomes_for(outbox, queued)) == 1
    assert second.commits[0] == 2


async def test_a_handover_cancels_queued_runs_and_lets_running_ones_end_before_committing():
    outbox = Outbox()
    owner = Replica(Fit(seconds=0.3), outbox, OutcomeLog(outbox))
    await owner.intake.assigned({0, 1})
    running, queued = request("running"), request("queued")
    await owner.intake.take(running, 0, 0)
    await asyncio.sleep(DEBOUNCE_S + 0.05)  # "running" is fitting
    owner.coalescer.debounce_s = 10.0
    await owner.intake.take(queued, 1, 0)  # queued for 10 s
    await owner.intake.revoked({0, 1})
    assert [e.model_name for e in outbox.events] == ["running"]
    assert owner.commits[0] == 1 and owner.commits.get(1, 0) == 0  # "queued" is still open: not past it
    assert owner.coalescer._tasks == {}

    successor = Replica(Fit(), outbox, OutcomeLog(outbox))
    await successor.intake.assigned({0, 1})
    await successor.intake.take(running, 0, 0)  # redelivered only if the commit was lost; ended
    await successor.intake.take(queued, 1, 0)
    await successor.settled()
    assert [e.model_name for e in outbox.events] == ["running", "queued"]


async def test_a_run_still_fitting_after_the_handover_timeout_is_abandoned_not_published():
    outbox = Outbox()
    owner = Replica(Fit(seconds=0.5), outbox, OutcomeLog(outbox), handover_timeout_s=0.1)
    await owner.intake.assigned({0})
    slow = request("slow")
    await owner.intake.take(slow, 0, 0)
    await asyncio.sleep(DEBOUNCE_S + 0.05)
    await owner.intake.revoked({0})
    assert owner.commits.get(0, 0) == 0  # nothing past the abandoned request
    successor = Replica(Fit(), outbox, OutcomeLog(outbox))
    await successor.intake.assigned({0})
    await successor.intake.take(slow, 0, 0)
    await successor.settled()
    await owner.settled()
    assert len(outcomes_for(outbox, slow)) == 1
    assert owner.runs.list()[0].status == "released"


async def test_messages_of_a_partition_not_assigned_are_left_to_its_owner():
    outbox = Outbox()
    replica = Replica(Fit(), outbox, EndedRequests())
    await replica.intake.assigned({0})
    await replica.intake.take(request(), 2, 0)
    await asyncio.sleep(DEBOUNCE_S + 0.05)
    assert outbox.events == [] and replica.commits == {} and replica.coalescer._tasks == {}


async def test_a_run_abandoned_at_a_handover_stays_dropped_when_its_partition_comes_back():
    outbox = Outbox()
    replica = Replica(Fit(seconds=0.4), outbox, OutcomeLog(outbox), handover_timeout_s=0.05)
    await replica.intake.assigned({0})
    req = request()
    await replica.intake.take(req, 0, 0)
    await asyncio.sleep(DEBOUNCE_S + 0.05)  # fitting
    await replica.intake.revoked({0})  # times out: the run is abandoned
    await replica.intake.assigned({0})  # ...and the partition comes straight back
    await replica.intake.take(req, 0, 0)
    await replica.settled()
    assert len(outcomes_for(outbox, req)) == 1 and replica.commits[0] == 1
    assert sorted(r.status for r in replica.runs.list()) == ["completed", "released"]
