"""What monitoring refuses to watch: events that name no dataset or model it could judge.

A prediction of a dataset without a contract has no reference to drift from; a label that is no
outcome of its dataset (NaN, 1e308, a 10,000-character string) would poison the error stream; a
champion the registry does not hold has no training data. Each is dead-lettered with the reason.
"""

from __future__ import annotations

from flywheel.common.contracts import DataContract, label_refusal
from flywheel.schemas import LabelObserved, PredictionLabelled, PredictionMade

__all__ = ["label_refusal", "prediction_refusal", "refusal"]


def prediction_refusal(prediction: PredictionMade, contracts: dict[str, DataContract]) -> str | None:
    """Why a prediction cannot be watched (its dataset has no contract); None when it can."""
    if prediction.dataset not in contracts:
        return f"no data contract for dataset {prediction.dataset!r}; known: {sorted(contracts)}"
    return None


def refusal(
    event: PredictionMade | LabelObserved | PredictionLabelled, contracts: dict[str, DataContract]
) -> str | None:
    """Why the subscribers dead-letter a prediction or a label (as observed or joined); None when they fold it in."""
    if isinstance(event, PredictionMade):
        return prediction_refusal(event, contracts)
    return label_refusal(contracts, event)
