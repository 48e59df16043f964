"""The MLOps maturity model checked against the running system instead of a questionnaire.

``evidence`` is what is judged, ``gather`` collects it (MinIO, MLflow, Kafka), ``criteria`` are the
judges, ``report`` scores them into levels per area, ``http`` serves ``GET /maturity``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from flywheel.common.datasets import DatasetCatalog
from flywheel.registry.maturity import gather
from flywheel.registry.maturity.criteria import CRITERIA
from flywheel.registry.maturity.evidence import Evidence
from flywheel.registry.maturity.report import MaturityReport, judge
from flywheel.registry.modelstore import ModelStore

FRESH_S = 15.0  # evidence this recent is judged again rather than gathered again


class Assessor:
    """Judges maturity on evidence gathered at most ``fresh_s`` ago, per scope: a dashboard (or a fuzzer)
    polling ``GET /maturity`` costs one gathering per model per ``fresh_s``, not one per request."""

    def __init__(
        self,
        store: ModelStore,
        catalog: DatasetCatalog,
        bootstrap_servers: str,
        fresh_s: float = FRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.catalog, self.bootstrap_servers = store, catalog, bootstrap_servers
        self.fresh_s, self.clock = fresh_s, clock
        self._gathered: dict[str | None, tuple[float, Evidence]] = {}
        self._lock = asyncio.Lock()  # concurrent requests share one gathering

    async def assess(self, model: str | None = None, since: datetime | None = None) -> MaturityReport:
        """The maturity of the deployment (or of ``model``), from evidence since ``since`` (None: all of it)."""
        return judge(CRITERIA, await self.evidence(model), model, since)

    async def evidence(self, model: str | None) -> Evidence:
        async with self._lock:
            now = self.clock()
            self._gathered = {k: v for k, v in self._gathered.items() if now - v[0] < self.fresh_s}
            if model not in self._gathered:
                found = await gather.gather(self.store, self.catalog, self.bootstrap_servers, model)
                self._gathered[model] = (now, found)
            return self._gathered[model][1]


__all__ = ["Assessor", "MaturityReport"]
