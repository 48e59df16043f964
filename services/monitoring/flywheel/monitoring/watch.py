"""The monitors of every model, with their references loaded on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from flywheel.monitoring.metrics import observe
from flywheel.monitoring.monitor import ModelMonitor, MonitorConfig, Reference
from flywheel.schemas import ChampionChanged, Event, PredictionLabelled, PredictionMade

log = structlog.get_logger(__name__)

ReferenceLoader = Callable[[str], Reference | None]


class Watch:
    """Routes predictions and labelled predictions to the monitor of their model; swaps references on new champions.

    Loading a reference reads MLflow and MinIO (blocking), so it runs in a thread.
    """

    def __init__(
        self, config: MonitorConfig, load_reference: ReferenceLoader, configs: dict[str, MonitorConfig] | None = None
    ) -> None:
        self.config = config
        self.configs = configs or {}  # a model's own, where its dataset chose (flywheel.monitoring.perdataset)
        self._load = load_reference
        self.monitors: dict[str, ModelMonitor] = {}
        self.model_of_dataset: dict[str, str] = {}

    async def monitor(self, model_name: str) -> ModelMonitor:
        monitor = self.monitors.get(model_name)
        if monitor is None:
            monitor = self.monitors[model_name] = self._new(model_name)
        if monitor.reference is None:
            await self.refresh(model_name)
        return monitor

    def _new(self, model_name: str) -> ModelMonitor:
        return ModelMonitor(model_name, self.configs.get(model_name, self.config))

    async def refresh(self, model_name: str) -> list[tuple[PredictionMade, list[Event]]]:
        """Load the model's champion's reference; the verdicts on its answers that came before it."""
        monitor = self.monitors.get(model_name)
        if monitor is None:
            monitor = self.monitors[model_name] = self._new(model_name)
        reference = await asyncio.to_thread(self._load, model_name)
        if reference is None:
            return []
        if monitor.reference is not None and monitor.reference.model_version == reference.model_version:
            return []
        events = monitor.set_reference(reference)
        observe(monitor)  # the new champion's version (and what its waiting answers showed) at once
        self.model_of_dataset[reference.dataset] = model_name
        log.info(
            "reference loaded",
            model=model_name,
            version=reference.model_version,
            dataset_version=reference.dataset_version,
            rows=len(next(iter(reference.features.values()))),
            judged_on_load=len(monitor.window),
        )
        return events

    async def on_prediction(self, prediction: PredictionMade, now: float | None = None) -> list[Event]:
        """``now``: when it happened, if not now (a rebuild replays the past at its own times)."""
        self.model_of_dataset.setdefault(prediction.dataset, prediction.model_name)
        monitor = await self.monitor(prediction.model_name)
        events = monitor.on_prediction(prediction, now)
        if monitor.since_check == 0:  # its gauges change when it checks (or joins a label), not on every prediction
            observe(monitor)
        return events

    async def on_labelled(self, labelled: PredictionLabelled, now: float | None = None) -> list[Event]:
        monitor = await self.monitor(labelled.model_name)
        events = monitor.on_labelled(labelled, now)
        observe(monitor)
        return events

    def judges_against(self, model_name: str, version: str) -> bool:
        """Whether ``model_name``'s traffic is judged against ``version``'s reference already."""
        monitor = self.monitors.get(model_name)
        return monitor is not None and monitor.reference is not None and monitor.reference.model_version == version

    async def on_champion_changed(self, change: ChampionChanged) -> list[tuple[PredictionMade, list[Event]]]:
        return await self.refresh(change.model_name)

    def on_candidate_ended(self, model_name: str, version: str | None, why: str) -> None:
        """A candidate was rejected or not promoted: its monitor may ask again while its champion is below floor."""
        monitor = self.monitors.get(model_name)
        if monitor is None or monitor.reference is None or monitor.reference.model_version == version:
            return  # unknown model, or a champion's own rollback (the bake period): not a candidate in vain
        monitor.candidate_ended()
        log.info("candidate ended without replacing the champion", model=model_name, version=version, why=why)
