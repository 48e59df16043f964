"""A dataset's own monitoring choices: ``datasets/<name>/monitoring.yaml`` (optional).

The service's settings (``MONITORING_*``) are the defaults for every model; a dataset may
choose what suits its data: the concept-drift detector (daily weather's error rate
wanders with the seasons, and Page-Hinkley, which watches for any rise, calls that drift;
ADWIN waits for a significant change) and which kinds of drift ask for a retrain (the
seasons move the weather's inputs every few months: data drift alerts, only a rise in
errors retrains). Read once at start-up, like the contracts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from flywheel.common.modelspec import load_model_spec
from flywheel.monitoring.monitor import MonitorConfig

FILE = "monitoring.yaml"


class DatasetMonitoring(BaseModel):
    """``datasets/<name>/monitoring.yaml``: what differs from the service's defaults for this dataset's model."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    detector: Literal["page_hinkley", "adwin"] | None = Field(
        default=None, description="Concept-drift detector on the error stream; None: MONITORING_DETECTOR."
    )
    retrain_on: tuple[Literal["data", "concept"], ...] | None = Field(
        default=None,
        description="The kinds of drift that ask for a retrain (the others alert only); None: both.",
    )

    def applied_to(self, config: MonitorConfig) -> MonitorConfig:
        """The service's config with this dataset's choices.

        >>> DatasetMonitoring(dataset="d", detector="adwin").applied_to(MonitorConfig()).detector
        'adwin'
        >>> DatasetMonitoring(dataset="d").applied_to(MonitorConfig()).detector
        'page_hinkley'
        >>> DatasetMonitoring(dataset="d", retrain_on=["concept"]).applied_to(MonitorConfig()).retrain_on
        ('concept',)
        """
        return dataclasses.replace(config, **self.model_dump(exclude={"dataset"}, exclude_none=True))


def monitor_configs(datasets_dir: Path, default: MonitorConfig) -> dict[str, MonitorConfig]:
    """Model name -> its config, for every dataset that declares a ``monitoring.yaml`` (its ``model.yaml``'s model)."""
    configs = {}
    for path in sorted(Path(datasets_dir).glob(f"*/{FILE}")):
        choices = DatasetMonitoring.model_validate(yaml.safe_load(path.read_text()) or {})
        if choices.dataset != path.parent.name:
            raise ValueError(f"{path} is for dataset {choices.dataset!r}, not {path.parent.name!r}")
        spec = load_model_spec(datasets_dir, choices.dataset)
        configs[spec.model_name] = choices.applied_to(default)
    return configs
