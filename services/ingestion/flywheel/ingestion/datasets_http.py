"""Ingestion's dataset routes: the versions, their manifests and their data."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import StreamingResponse

from flywheel.common.auth import Credentials
from flywheel.common.datasets import DatasetCatalog, data_key
from flywheel.common.problems import problems
from flywheel.ingestion.roller import Roller
from flywheel.schemas import DatasetManifest

VERSION = re.compile(r"[0-9a-f]{1,64}")
CHUNK = 1 << 16
PARQUET = "application/vnd.apache.parquet"


def create_dataset_router(
    catalog: DatasetCatalog,
    roller: Roller,
    credentials: Credentials,
    seal_timeout_s: float = 3.0,
    labels: Roller | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/datasets", tags=["datasets"])
    operator = [Depends(credentials.require("operator"))]

    def known(dataset: str) -> None:
        if dataset not in roller.contracts:
            raise HTTPException(404, f"no dataset {dataset[:80]!r}; known: {sorted(roller.contracts)}")

    async def manifest_of(dataset: str, version: str) -> DatasetManifest:
        known(dataset)
        if not VERSION.fullmatch(version):  # versions are hex hash prefixes; anything else cannot exist
            raise HTTPException(404, f"no version {version[:80]!r} of dataset {dataset!r}: versions are hex")
        try:
            return await asyncio.to_thread(catalog.manifest, dataset, version)
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip("'\"")) from exc
        except Exception as exc:
            raise HTTPException(503, f"object store unavailable: {type(exc).__name__}") from exc

    @router.get("")
    async def datasets() -> dict[str, Any]:
        """Every dataset with its versions (oldest first) and the rows waiting for the next one."""
        answer = {}
        for dataset in sorted(roller.contracts):
            manifests = await asyncio.to_thread(catalog.manifests, dataset)
            answer[dataset] = {
                "buffered_rows": len(roller.buffers[dataset].records),
                "versions": [
                    {
                        "version": m.version,
                        "parent_version": m.parent_version,
                        "rows": m.row_count,
                        "time_min": m.time_min,
                        "time_max": m.time_max,
                        "created_at": m.created_at,
                    }
                    for m in manifests
                ],
            }
        return answer

    @router.get("/{dataset}/versions/{version}", responses=problems(404, 503))
    async def manifest(
        dataset: str, version: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        """A version's manifest; to a caller who may read the dataset, a presigned URL to download
        its Parquet data for an hour (to anyone else, ``download_url`` is null)."""
        found = await manifest_of(dataset, version)
        caller = credentials.caller(authorization)
        url = None
        if caller is not None and caller.may_read(dataset):
            url = await asyncio.to_thread(catalog.store.presigned_url, data_key(dataset, version))
        return {**found.model_dump(mode="json"), "download_url": url}

    @router.get(
        "/{dataset}/versions/{version}/data",
        response_class=StreamingResponse,
        responses={
            200: {"content": {PARQUET: {}}, "description": "The version's rows as a Parquet file."},
            **problems(401, 403, 404, 503),
        },
        dependencies=[Depends(credentials.reader())],
    )
    async def data(dataset: str, version: str) -> StreamingResponse:
        """The version's data as Parquet, streamed from the object store (a reader of the dataset, or an operator)."""
        await manifest_of(dataset, version)
        store = catalog.store
        try:
            body = await asyncio.to_thread(store.client.get_object, store.bucket, data_key(dataset, version))
        except Exception as exc:
            raise HTTPException(503, f"data of {dataset}/{version} unavailable: {type(exc).__name__}") from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.stream(CHUNK)
            finally:
                body.close()
                body.release_conn()

        headers = {"Content-Disposition": f'attachment; filename="{dataset}-{version}.parquet"'}
        if body.headers.get("Content-Length"):
            headers["Content-Length"] = body.headers["Content-Length"]
        return StreamingResponse(chunks(), media_type=PARQUET, headers=headers)

    async def seal_now(which: Roller, dataset: str, what: str) -> dict[str, Any]:
        known(dataset)
        # shielded: a seal the object store is slow to take goes on (the roller owns it), the caller hears 503
        sealing = asyncio.ensure_future(which.seal_now(dataset))
        try:
            sealed = await asyncio.wait_for(asyncio.shield(sealing), seal_timeout_s)
        except TimeoutError as exc:
            raise HTTPException(
                503,
                f"sealing {what} of {dataset} is taking over {seal_timeout_s:g} s (is the object store down?)"
                "; it goes on",
            ) from exc
        except Exception as exc:  # the buffer is intact; the roller retries by age
            raise HTTPException(
                503, f"could not seal {what} of {dataset} now: {type(exc).__name__}: {exc}"[:300]
            ) from exc
        return {"sealed": sealed is not None, "manifest": sealed.model_dump(mode="json") if sealed else None}

    @router.post("/{dataset}/seal", dependencies=operator, responses=problems(401, 403, 404, 503))
    async def seal(dataset: str) -> dict[str, Any]:
        """Seal the rows buffered for a dataset into a version now, without waiting for size or age."""
        return await seal_now(roller, dataset, "records")

    if labels is not None:
        label_router(router, labels, known, seal_now, operator)

    return router


def label_router(
    router: APIRouter, labels: Roller, known: Callable[[str], None], seal_now: Callable, operator: list[Any]
) -> None:
    """The label batches of a dataset: listed, and sealed on demand."""

    @router.get("/{dataset}/labels", responses=problems(404, 503))
    async def label_batches(dataset: str) -> dict[str, Any]:
        """The sealed label batches of a dataset (oldest first), and the labels buffered or waiting for their record."""
        known(dataset)
        try:
            manifests = await asyncio.to_thread(labels.catalog.manifests, dataset)
        except Exception as exc:
            raise HTTPException(503, f"the object store did not answer: {type(exc).__name__}"[:300]) from exc
        return {
            "buffered_labels": len(labels.buffers[dataset].records),
            "waiting_for_their_record": len(labels.waiting[dataset].held),
            "batches": [
                {
                    "version": m.version,
                    "labels": m.row_count,
                    "observed_min": m.time_min,
                    "observed_max": m.time_max,
                    "created_at": m.created_at,
                }
                for m in manifests
            ],
        }

    @router.post("/{dataset}/labels/seal", dependencies=operator, responses=problems(401, 403, 404, 503))
    async def seal_labels(dataset: str) -> dict[str, Any]:
        """Seal the labels buffered for a dataset into a batch now (labels waiting for their record stay)."""
        return await seal_now(labels, dataset, "labels")
