"""The MLOps maturity model checked against the running system instead of a questionnaire.

``evidence`` is what is judged, ``gather`` collects it (MinIO, MLflow, Kafka), ``criteria`` are the
judges, ``report`` scores them into levels per area, ``http`` serves ``GET /maturity``.
"""

from __future__ import annotations

from datetime import datetime

from flywheel.common.datasets import DatasetCatalog
from flywheel.registry.maturity.criteria import CRITERIA
from flywheel.registry.maturity.gather import gather
from flywheel.registry.maturity.report import MaturityReport, judge
from flywheel.registry.modelstore import ModelStore


async def assess(
    store: ModelStore,
    catalog: DatasetCatalog,
    bootstrap_servers: str,
    model: str | None = None,
    since: datetime | None = None,
) -> MaturityReport:
    """The maturity of the deployment (or of ``model``), from evidence since ``since`` (None: all of it)."""
    evidence = await gather(store, catalog, bootstrap_servers, model)
    return judge(CRITERIA, evidence, model, since)


__all__ = ["MaturityReport", "assess"]
