"""Immutable, content-addressed dataset versions."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from flywheel.schemas.envelope import Event, Name


class ColumnSummary(BaseModel):
    """Data-quality figures for one column of a dataset version."""

    dtype: str
    null_rate: float
    count: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None
    top_categories: dict[str, int] | None = None


class DatasetManifest(BaseModel):
    """What a dataset version is: its hash, lineage, shape and quality."""

    dataset: str
    version: str = Field(description="Content hash prefix; the same rows give the same version.")
    content_hash: str = Field(description="sha256 of the canonical Parquet bytes.")
    parent_version: str | None = None
    row_count: int
    columns: dict[str, str] = Field(description="Column name to dtype.")
    time_min: AwareDatetime | None = None
    time_max: AwareDatetime | None = None
    quality: dict[str, ColumnSummary] = {}
    uri: str = Field(description="Where the Parquet data lives, e.g. s3://flywheel/datasets/...")
    contract_version: str | None = None
    created_at: AwareDatetime | None = None
    source_offsets: dict[str, int] | None = Field(
        default=None,
        description="Kafka partition -> next offset of the source topic sealed up to: where a restart resumes.",
    )
    kind: Literal["records", "labels"] = Field(
        default="records",
        description="records: a batch of validated records (records.validated); labels: a batch of outcomes (labels).",
    )


class DatasetVersioned(Event):
    """A new dataset version was sealed and stored (``datasets.versioned``)."""

    dataset: Name
    version: Name
    manifest: DatasetManifest
