"""Faults of the infrastructure under a stream: the Kafka broker SIGKILLed, MinIO gone for 30 s
while versions seal, MLflow gone while a training run logs. Each is restarted by the launcher;
the counts afterwards must be exact, as if nothing had happened."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flywheel.common.settings import KafkaSettings, MlflowSettings
from flywheel.common.tracking import configure_mlflow
from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_REJECTED,
    PREDICTIONS,
    RECORDS_VALIDATED,
    TRAINING_COMPLETED,
    TRAINING_FAILED,
)
from tests.integration.test_training_runs import agrawal_rows, request_training, write_version
from tests.reliability.conftest import outage, restart, sigkill
from tests.reliability.outcomes import (
    assert_exact,
    first_output,
    outcome,
    run_outcomes,
    running_mlflow_runs,
    tag,
    wait_for_stage,
)
from tests.reliability.traffic import FAST, SharedModel, Stream, drain, report, tally, unfinished_runs
from tests.support import stack
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(300)]


async def test_kafka_broker_killed_mid_stream_then_restarted_loses_and_doubles_nothing(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    async with Stream(kafka, tag("kafka"), model.name) as stream:
        await stream.send(0)
        await first_output(stream, PREDICTIONS.name, "request_id")
        await first_output(stream, RECORDS_VALIDATED.name, "record_id")
        pid = sigkill("kafka")
        took = await restart("kafka")
        await stream.send(1)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"SIGKILL kafka (pid {pid}) mid-stream, back in {took:.0f} s"
        )
    assert_exact(tallies, behind, text)


async def test_minio_gone_for_30_s_while_versions_seal_seals_every_record_once(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    async with (
        Stream(kafka, tag("minio"), model.name, records=1500) as stream,
        httpx.AsyncClient(base_url=stack.service_url("ingestion"), timeout=10) as ingestion,
    ):
        await stream.send(0)
        await first_output(stream, RECORDS_VALIDATED.name, "record_id")
        statuses = []
        async with outage("minio", 30):
            await stream.send(1, pause_s=10)  # more than a version's worth of rows arrives while it is gone
            for _ in range(3):
                statuses.append((await ingestion.post("/datasets/loans/seal")).status_code)
                await asyncio.sleep(3)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"MinIO down 30 s while versions seal (seal calls answered {statuses})"
        )
    assert_exact(tallies, behind, text)
    assert all(code < 500 for code in statuses), f"seal calls while MinIO was gone: {statuses}"


async def test_mlflow_gone_during_a_training_run_ends_the_run_exactly_once(
    kafka: KafkaSettings, store_settings, mlflow_settings: MlflowSettings, model: SharedModel
):
    name = tag("mlflow")
    version = write_version(store_settings, agrawal_rows(1200, function=0, seed=8))
    tracking = configure_mlflow(mlflow_settings, store_settings)
    async with (
        Stream(kafka, name, model.name) as stream,
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
        TopicReader(kafka.bootstrap_servers, TRAINING_FAILED.name) as failed,
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_REJECTED.name) as rejected,
        httpx.AsyncClient(base_url=stack.service_url("training"), timeout=10) as http,
    ):
        await stream.send(0)
        request_id = await request_training(stack.service_url("training"), name, version, params=FAST)
        # MLflow is written to only once the model is fit: be gone by then
        stage = await wait_for_stage(http, name, lambda run: run["status"] == "running")
        async with outage("mlflow", 30):
            await stream.send(1)
        ended = await run_outcomes(completed, failed, name, timeout=120)
        mine = lambda b: b.get("model_name") == name  # noqa: E731
        if completed.seen:
            await drain(approved, lambda seen: len(seen) >= 1, 30, mine)
            await drain(rejected, lambda _: False, 1, mine)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"MLflow down 30 s from training stage {stage!r}"
        )
        open_runs = await unfinished_runs(http, {name}, timeout=10)
    runs = tally("training outcomes (request)", 1, ended, lambda e: request_id)
    decisions = tally(
        "gate decisions (run id)", len(completed.seen), [*approved.seen, *rejected.seen], lambda e: e["run_id"]
    )
    mlflow_open = running_mlflow_runs(tracking, name)
    report(
        "  training",
        runs,
        decisions,
        f"outcomes: {[(e['event_type'], e.get('reason', '')[:80]) for e in ended]}; "
        f"runs open in the service: {len(open_runs)}; MLflow runs left RUNNING: {len(mlflow_open)}",
    )
    assert_exact([*tallies, decisions], behind, text)
    assert len(ended) == 1, f"training outcomes of request {request_id}: {ended}"
    assert not open_runs and not mlflow_open, f"open runs {open_runs}, MLflow RUNNING {mlflow_open}"
