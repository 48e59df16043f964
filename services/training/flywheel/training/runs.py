"""What the service knows about its training runs, for ``GET /runs`` and the logs."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from flywheel.schemas.envelope import utc_now

# "released": a queued run handed back (partition reassigned, or shutdown); its requests stay open.
Status = Literal["queued", "running", "completed", "failed", "released"]


class RunRecord(BaseModel):
    """One training run: queued (collecting a burst of requests, or waiting for fresh data), running
    (fitting in a worker thread), finished, or released."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model_name: str
    dataset: str
    status: Status = "queued"
    stage: str = "queued"
    progress: float = 0.0
    request_ids: list[str] = []
    trigger: str = ""
    dataset_version: str | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None
    metrics: dict[str, float] = {}
    reason: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def merged_requests(self) -> int:
        return len(self.request_ids)


class RunBook:
    """The last ``capacity`` runs, newest last; looked up by our id or the MLflow run id."""

    def __init__(self, capacity: int = 200) -> None:
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._capacity = capacity

    def add(self, record: RunRecord) -> RunRecord:
        self._runs[record.id] = record
        while len(self._runs) > self._capacity:
            self._runs.popitem(last=False)
        return record

    def get(self, run_id: str) -> RunRecord | None:
        if run_id in self._runs:
            return self._runs[run_id]
        return next((r for r in self._runs.values() if r.mlflow_run_id == run_id), None)

    def list(self, model_name: str | None = None, status: str | None = None) -> list[RunRecord]:
        return [
            r
            for r in reversed(self._runs.values())
            if (model_name is None or r.model_name == model_name) and (status is None or r.status == status)
        ]

    def running(self) -> int:
        return sum(r.status == "running" for r in self._runs.values())
