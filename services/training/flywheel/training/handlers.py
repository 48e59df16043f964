"""Pure handlers: which training request an event asks for (no I/O)."""

from __future__ import annotations

import uuid

from flywheel.schemas import DriftDetected, TrainModel

PRODUCER = "training"


def retrain_request_id(drift_id: uuid.UUID) -> uuid.UUID:
    """The id of the training request a drift causes: derived, so a redelivered drift asks once."""
    return uuid.uuid5(drift_id, "training.requested")


def request_from_drift(drift: DriftDetected) -> TrainModel | None:
    """A retrain command caused by a drift finding that asks for one, else None.

    Its id derives from the drift's, so a redelivered drift yields the same command (deduped), and
    it is dated at the drift (``occurred_at``): what "data after the drift" means is measured from
    there, on the ingestion clock (``flywheel.training.window.ingested_after``), however late the
    command is read.

    >>> drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=True)
    >>> request = request_from_drift(drift)
    >>> request.causation_id == drift.event_id, request.causation_chain == [str(drift.event_id)]
    (True, True)
    >>> request_from_drift(drift).event_id == request.event_id
    True
    >>> request_from_drift(drift.model_copy(update={"retrain": False})) is None
    True
    """
    if not drift.retrain:
        return None
    drifted = [f.feature for f in drift.features if f.drifted]
    detail = f" in {', '.join(sorted(set(drifted))[:5])}" if drifted else ""
    return TrainModel(
        event_id=retrain_request_id(drift.event_id),
        occurred_at=drift.occurred_at,
        producer=PRODUCER,
        model_name=drift.model_name,
        dataset=drift.dataset,
        trigger="drift",
        reason=f"{drift.kind} drift{detail} over {drift.window_size} records",
        causation_chain=[str(drift.event_id)],
        **drift.caused(),
    )


def scheduled_request(dataset: str, model_name: str) -> TrainModel:
    """The periodic retrain of a dataset's default model on its newest data."""
    return TrainModel(
        producer=PRODUCER, model_name=model_name, dataset=dataset, trigger="schedule", reason="scheduled retrain"
    )
