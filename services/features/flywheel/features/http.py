"""Features' HTTP routes: the online store, its statistics, and online computation.

Each computing route takes an optional ``version``: a feature-set version (content hash) to
compute with instead of today's, so a reader pinned to an older version gets exactly it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, JsonValue

from flywheel.common.contracts import DataContract
from flywheel.common.featuresets import FeatureSet
from flywheel.common.problems import problems
from flywheel.features.store import OnlineStore
from flywheel.features.versions import KnownVersions


class ComputeRequest(BaseModel):
    records: list[dict[str, JsonValue]] = Field(min_length=1, max_length=1000)


def create_router(
    store: OnlineStore,
    contracts: dict[str, DataContract],
    ready: Callable[[], bool] = lambda: True,
    versions: KnownVersions | None = None,
) -> APIRouter:
    router = APIRouter(tags=["features"])
    versions = versions or KnownVersions(store.feature_sets)

    def feature_set(dataset: str) -> FeatureSet:
        if dataset not in store.feature_sets:
            raise HTTPException(
                404, f"no feature set for dataset {dataset[:80]!r}; known: {sorted(store.feature_sets)}"
            )
        return store.feature_sets[dataset]

    async def feature_set_at(dataset: str, version: str | None) -> FeatureSet:
        """Today's feature set, or the given version of it (404 when no one kept that version)."""
        current = feature_set(dataset)
        if version is None or version == current.version:
            return current
        found = await asyncio.to_thread(versions.find, dataset, version)
        if found is None:
            raise HTTPException(404, f"no version {version[:80]!r} of the feature set of {dataset!r}")
        return found

    @router.get("/featuresets")
    async def featuresets() -> dict[str, FeatureSet]:
        """The feature definitions, by dataset: the same ones training and serving compute."""
        return store.feature_sets

    @router.get("/featuresets/{dataset}/versions", responses=problems(404))
    async def feature_set_versions(dataset: str) -> dict[str, Any]:
        """Every version of a dataset's feature set kept so far, and today's."""
        current = feature_set(dataset)
        return {"current": current.version, "versions": await asyncio.to_thread(versions.versions, dataset)}

    @router.get("/featuresets/{dataset}/{version}", responses=problems(404))
    async def feature_set_version(dataset: str, version: str) -> FeatureSet:
        """One version of a dataset's feature set, as it was defined: immutable."""
        return await feature_set_at(dataset, version)

    @router.get("/features/{dataset}/statistics", responses=problems(404))
    async def statistics(dataset: str) -> dict[str, Any]:
        """Streaming statistics per feature over every record seen."""
        feature_set(dataset)
        return {
            "entities": store.entities(dataset),
            "features": {name: s.as_dict() for name, s in store.statistics[dataset].items()},
        }

    @router.get("/features/{dataset}/{entity_id}", responses=problems(404, 503))
    async def latest(dataset: str, entity_id: str, version: str | None = None) -> dict[str, Any]:
        """The entity's latest feature vector, from memory (by today's version, or by ``version``)."""
        fs = await feature_set_at(dataset, version)
        stored = store.latest.get((dataset, entity_id))
        if stored is None:
            if not ready():  # it may well be in the part of the log not replayed yet
                raise HTTPException(503, f"online store is rebuilding; entity {entity_id[:80]!r} not found yet")
            raise HTTPException(404, f"no features for entity {entity_id[:80]!r} of dataset {dataset!r}")
        return {
            "dataset": dataset,
            "entity_id": entity_id,
            "feature_set": fs.feature_set,
            "feature_set_version": fs.version,
            "event_time": stored.event_time,
            "record_id": stored.record_id,
            "values": stored.values if fs is feature_set(dataset) else stored.values_of(fs),
        }

    @router.post("/features/{dataset}/compute", responses=problems(404))
    async def compute(dataset: str, request: ComputeRequest, version: str | None = None) -> dict[str, Any]:
        """Feature vectors of raw records, computed online (invalid fields: a 422 that names them)."""
        fs = await feature_set_at(dataset, version)
        contract = contracts.get(dataset)
        if contract is not None:
            inputs = set(fs.inputs)
            problems = [
                f"records.{i}.{v.column}: {v.message}"
                for i, (_, violations) in enumerate(contract.check_many(request.records))
                for v in violations
                if v.column in inputs and v.rule != "unknown"
            ]
            if problems:
                raise HTTPException(422, "; ".join(problems[:10]))
        try:
            vectors = [dict(zip(fs.names, row, strict=True)) for row in fs.matrix(request.records)]
        except (TypeError, ValueError, OverflowError) as exc:  # a dataset without a contract: nothing checked it
            raise HTTPException(422, f"cannot compute features of these records: {exc}"[:300]) from exc
        return {
            "feature_set": fs.feature_set,
            "version": fs.version,
            "vectors": [{k: (None if v != v else v) for k, v in vector.items()} for vector in vectors],
        }

    return router
