"""Faults of the infrastructure under a stream: the Kafka broker SIGKILLed, MinIO gone for 30 s
while versions seal, MLflow gone while a training run logs. Each is restarted by the launcher;
the counts afterwards must be exact, as if nothing had happened."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flywheel.common.settings import KafkaSettings, MlflowSettings
from flywheel.schemas import (
    PREDICTIONS,
    RECORDS_VALIDATED,
)
from tests.reliability.conftest import outage, restart, sigkill
from tests.reliability.outcomes import (
    assert_exact,
    first_output,
    outcome,
    tag,
    train_through,
)
from tests.reliability.traffic import SharedModel, Stream
from tests.support import stack
from tests.support.auth import OPERATOR

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
        httpx.AsyncClient(base_url=stack.service_url("ingestion"), headers=OPERATOR, timeout=10) as ingestion,
    ):
        await stream.send(0)
        await first_output(stream, RECORDS_VALIDATED.name, "record_id")
        statuses = []
        async with outage("minio", 30):
            await stream.send(1, pause_s=10)  # more than a version's worth of rows arrives while it is gone
            for _ in range(3):
                try:
                    statuses.append((await ingestion.post("/datasets/loans/seal")).status_code)
                except httpx.TimeoutException:
                    statuses.append("no answer in 10 s")
                await asyncio.sleep(3)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"MinIO down 30 s while versions seal (seal calls answered {statuses})"
        )
    assert_exact(tallies, behind, text)
    # an outage is not the caller's fault: answered at once, sealed (200) or "not now" (503), never hung
    assert all(code in (200, 503) for code in statuses), f"seals while MinIO was gone: {statuses}"


@pytest.mark.timeout(480)  # a training run on two busy cores, and a 30 s outage
async def test_mlflow_gone_during_a_training_run_ends_the_run_exactly_once(
    kafka: KafkaSettings, store_settings, mlflow_settings: MlflowSettings, model: SharedModel
):
    async def gone(stream: Stream, stage: str) -> str:
        async with outage("mlflow", 30):  # MLflow is written to once the model is fit: be gone by then
            await stream.send(1)
        return f"MLflow down 30 s from training stage {stage!r}"

    *_, ended = await train_through(kafka, store_settings, mlflow_settings, model.name, "mlflow", gone)
    assert len(ended) == 1, f"run outcomes: {ended}"


async def test_mlflow_gone_leaves_the_services_that_do_not_use_it_healthy(services):
    """Each service connects only what it uses: ingestion and features (Kafka and MinIO) answer 200 with
    MLflow down, and a record still reaches features; those that use MLflow say it is down (503)."""
    async with outage("mlflow", 5), httpx.AsyncClient(timeout=60) as http:
        for name in ("ingestion", "features"):
            response = await http.get(f"{services[name]}/health")
            assert response.status_code == 200, response.text
            checks = set(response.json()["checks"])
            assert {"kafka", "object_store"} <= checks and "mlflow" not in checks, response.text
        for name in ("training", "registry", "serving", "monitoring"):
            response = await http.get(f"{services[name]}/health")
            assert response.status_code == 503 and response.json()["checks"]["mlflow"] != "ok", response.text
