"""A dataset chooses its own concept-drift detector (datasets/<name>/monitoring.yaml); the rest keep the service's."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel.monitoring.monitor import MonitorConfig
from flywheel.monitoring.perdataset import monitor_configs
from flywheel.monitoring.watch import Watch

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def test_the_rain_model_is_watched_by_adwin_and_the_loans_model_by_the_services_default():
    configs = monitor_configs(DATASETS, MonitorConfig(detector="page_hinkley", window_size=700))
    assert configs["rain-today"].detector == "adwin"
    assert configs["rain-today"].window_size == 700, "only what the dataset chose differs"
    assert "loans-approval" not in configs


async def test_a_watch_builds_each_models_monitor_with_its_own_detector():
    default = MonitorConfig(detector="page_hinkley")
    watch = Watch(default, lambda name: None, monitor_configs(DATASETS, default))
    assert (await watch.monitor("rain-today")).errors.detector_name == "adwin"
    assert (await watch.monitor("loans-approval")).errors.detector_name == "page_hinkley"


def test_a_monitoring_file_names_its_dataset_and_nothing_unknown(tmp_path):
    for name in ("rain",):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.yaml").write_text((DATASETS / name / "model.yaml").read_text())
    (tmp_path / "rain" / "monitoring.yaml").write_text("dataset: loans\ndetector: adwin\n")
    with pytest.raises(ValueError, match="not 'rain'"):
        monitor_configs(tmp_path, MonitorConfig())
    (tmp_path / "rain" / "monitoring.yaml").write_text("dataset: rain\npsi_retrain: 0.5\n")
    with pytest.raises(ValidationError):
        monitor_configs(tmp_path, MonitorConfig())
