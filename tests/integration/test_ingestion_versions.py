"""Ingestion against the running stack: records in over HTTP, dataset versions out in MinIO.

The roller keeps its place in the manifests it writes, so a crash (kill -9) before a version
is sealed loses no accepted record and a restart seals none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.objectstore import ObjectStore
from flywheel.common.settings import KafkaSettings
from flywheel.ingestion.roller import Roller
from flywheel.ingestion.settings import IngestionSettings
from flywheel.schemas import DATASETS_VERSIONED
from tests.support import stack
from tests.support.auth import OPERATOR, PRODUCER
from tests.support.kafka import TopicReader
from tests.unit.test_ingestion_kafka import loan

pytestmark = pytest.mark.usefixtures("topics")
ROOT = Path(__file__).resolve().parents[2]


def applications(tag: str, n: int) -> list[dict]:
    return [loan(applicant_id=f"{tag}-{i}", salary=1000.0 + i) for i in range(n)]


async def post(http: httpx.AsyncClient, records: list[dict]) -> None:
    response = await http.post("/records", json={"dataset": "loans", "records": records}, headers=PRODUCER)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)


async def rows_sealed(
    http: httpx.AsyncClient,
    catalog: DatasetCatalog,
    tag: str,
    expected: int,
    since: datetime | None = None,
    attempts: int = 60,
) -> pd.Series:
    """Seal until every tagged row is in some version (of those created ``since``, when given);
    return the applicant ids over all those versions."""
    loaded: dict[str, pd.Series] = {}  # versions are immutable: each is read once
    for attempt in range(attempts):
        await http.post("/datasets/loans/seal", headers=OPERATOR)
        for m in catalog.manifests("loans"):
            fresh = since is None or (m.created_at is not None and m.created_at >= since)
            if m.source_offsets and fresh and m.version not in loaded:
                ids = catalog.load("loans", m.version)["applicant_id"]
                loaded[m.version] = ids[ids.str.startswith(f"{tag}-")]
        mine = pd.concat([pd.Series([], dtype=object), *loaded.values()], ignore_index=True)
        if len(mine) >= expected:
            return mine
        if attempt < attempts - 1:
            await asyncio.sleep(1)
    raise AssertionError(f"only {len(mine)} of {expected} rows of {tag} were sealed")


async def test_posted_records_become_a_version_with_a_manifest_an_event_and_downloadable_data(
    kafka: KafkaSettings, store_settings, services
):
    tag = f"it-{uuid.uuid4().hex[:8]}"
    catalog = DatasetCatalog(ObjectStore(store_settings))
    async with (
        httpx.AsyncClient(base_url=services["ingestion"], timeout=30) as http,
        TopicReader(kafka.bootstrap_servers, DATASETS_VERSIONED.name) as versioned,
    ):
        await post(http, applications(tag, 40))
        mine = await rows_sealed(http, catalog, tag, 40)
        events = await versioned.collect(lambda found: len(found) >= 1, timeout=30)
        version = events[-1]["version"]
        manifest = (await http.get(f"/datasets/loans/versions/{version}", headers=OPERATOR)).json()
        data = (await http.get(f"/datasets/loans/versions/{version}/data", headers=OPERATOR)).content
        anonymous = (await http.get(f"/datasets/loans/versions/{version}")).json()
        refused = {
            "none": await http.get(f"/datasets/loans/versions/{version}/data"),
            "producer": await http.get(f"/datasets/loans/versions/{version}/data", headers=PRODUCER),
        }
        presigned = await http.get(manifest["download_url"])
        listing = (await http.get("/datasets")).json()["loans"]
        missing = await http.get("/datasets/loans/versions/nope")
    assert len(mine) == 40 and mine.is_unique
    assert manifest["version"] == version and manifest["content_hash"].startswith(version)
    assert manifest["quality"]["salary"]["null_rate"] == 0.0 and manifest["download_url"].startswith("http")
    # the data, and a presigned URL to it, only to who may read the dataset
    assert presigned.status_code == 200 and presigned.content == data
    assert anonymous["download_url"] is None and anonymous["version"] == version
    assert refused["none"].status_code == 401 and "read access to loans" in refused["none"].json()["detail"]
    assert refused["producer"].status_code == 403 and "may not read" in refused["producer"].json()["detail"]
    frame = pd.read_parquet(io.BytesIO(data))
    assert len(frame) == manifest["row_count"] and list(frame.columns)[1:] == list(manifest["columns"])[1:]
    assert version in [v["version"] for v in listing["versions"]]
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def kill_ingestion() -> None:
    stack.kill("ingestion")


def start_ingestion() -> None:
    stack.restart("ingestion")


async def test_records_accepted_before_a_crash_are_in_exactly_one_version_after_restart(store_settings, services):
    tag = f"crash-{uuid.uuid4().hex[:8]}"
    catalog = DatasetCatalog(ObjectStore(store_settings))
    async with httpx.AsyncClient(base_url=services["ingestion"], timeout=30) as http:
        await post(http, applications(tag, 30))
        await http.post("/datasets/loans/seal", headers=OPERATOR)  # some sealed before the crash ...
        await post(http, [loan(applicant_id=f"{tag}-late-{i}") for i in range(30)])  # ... some only buffered
    kill_ingestion()
    start_ingestion()
    async with httpx.AsyncClient(base_url=services["ingestion"], timeout=30) as http:
        mine = await rows_sealed(http, catalog, tag, 60)
    assert len(mine) == 60 and mine.is_unique, mine[mine.duplicated()].tolist()


async def test_two_rollers_in_one_group_share_the_partitions_and_seal_each_record_once(
    kafka: KafkaSettings, store_settings, services
):
    """A second replica's roller joins the service's group mid-stream, then leaves again."""
    tag = f"pair-{uuid.uuid4().hex[:8]}"
    store = ObjectStore(store_settings)
    catalog = DatasetCatalog(store)
    contracts = load_contracts(ROOT / "datasets")
    announced = []

    async def publish(event) -> None:
        announced.append(event)

    group = IngestionSettings().roller_group
    replica = Roller(
        catalog,
        contracts,
        publish,
        kafka.bootstrap_servers,
        bucket=store.bucket,
        max_rows=1000,
        max_age_s=3600,
        group_id=group,
    )
    async with httpx.AsyncClient(base_url=services["ingestion"], timeout=30) as http:
        await post(http, applications(f"{tag}-a", 30))
        task = asyncio.create_task(replica.run())
        try:
            for _ in range(60):
                if replica.state == "rolling" and replica.owned:
                    break
                await asyncio.sleep(0.5)
            assert replica.owned, "the second roller got no partition"
            await post(http, applications(f"{tag}-b", 30))
            for _ in range(20):
                await replica.seal_now("loans")
                await http.post("/datasets/loans/seal", headers=OPERATOR)
                await asyncio.sleep(0.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        mine = await rows_sealed(http, catalog, tag, 60)  # the service's roller has every partition again
    assert len(mine) == 60 and mine.is_unique, mine[mine.duplicated()].tolist()
